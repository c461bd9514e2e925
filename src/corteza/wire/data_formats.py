"""Dataset files: one reader and one writer for each format, chosen by extension.

The formats themselves are described in :mod:`corteza.client.data.datasets`;
:mod:`corteza.wire.data_files` dispatches to :data:`READERS` and checks the
values, for the client opening a file and for the server storing an upload. A
reader returns the arrays of a dataset (``X``, ``y`` and any
:data:`~corteza.wire.data_arrays.TARGETS` found) and checks only what it must to
build them: the file's structure, shapes, and that it holds numbers. Nothing
is ever unpickled, and uncompressed ``.npz`` members and ``.npy`` files are
memory-mapped rather than read (:mod:`corteza.wire.data_arrays`).

A reader's ``width`` says whether labels are optional: None, they are
required (training); the model's input width, they are optional (scoring): a
file without any gives no ``y``, and a ``.csv`` or ``.npy`` table exactly
``width`` wide is all inputs.

A writer takes the same arrays a reader returns, so this module knows nothing
of :class:`~corteza.client.data.datasets.Dataset`; the words of the errors
live in :mod:`corteza.wire.errors` (:class:`~corteza.wire.errors.DataFileError`,
which the client raises as its ``InvalidDataError``). Nothing here needs torch.
"""

from __future__ import annotations

import csv
import itertools
import json
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from corteza.wire.data_arrays import TARGETS, as_float32, chunks, load_mapped, npz_arrays
from corteza.wire.errors import DataFileError, empty_data, invalid_data, invalid_label

Arrays = dict[str, NDArray[np.float32]]  # a Dataset's fields: "X", "y" and any TARGETS found
SNIFF_BYTES = 64 << 10  # the head of a text file looked at before it is parsed
# A .json or .csv file is parsed in memory (JSON takes about four times its size): a server
# refuses larger ones, and says to save them as .npz, which is memory-mapped or inflated to disk.
MAX_TEXT_BYTES = 64 * 10**6
TEXT_FORMATS = (".json", ".csv")


# ------------------------------------------------------------------ reading


def _shown(value: object) -> str:
    """A refused value as JSON, at most 80 characters (the message must stay small)."""
    try:
        text = json.dumps(value)
    except (RecursionError, ValueError, TypeError):
        text = type(value).__name__
    return text if len(text) <= 80 else f"{text[:77]}..."


def _read_json(path: Path, width: int | None) -> Arrays:
    try:
        with path.open(encoding="utf-8-sig") as fh:
            document = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise invalid_data(f"{path} is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise invalid_data(f"{path} is not valid JSON: it is nested too deep") from exc
    samples = document.get("samples") if isinstance(document, dict) else document
    if not isinstance(samples, list):
        raise invalid_data(
            f'{path} must hold a list of {{"input_data": [...], "anomaly_label": 0}}'
        )
    if not samples:
        raise empty_data(path)
    rows: list[Any] = []
    labels: list[float] = []
    targets: dict[str, list[Any]] = {name: [] for name in TARGETS}
    labelled = width is None or any(
        isinstance(sample, dict) and "anomaly_label" in sample for sample in samples
    )
    needed = "'input_data' and 'anomaly_label'" if width is None else "'input_data'"
    for i, sample in enumerate(samples):
        if not (isinstance(sample, dict) and "input_data" in sample):
            raise invalid_data(f"sample {i} must be an object with {needed}")
        if not labelled:
            rows.append(sample["input_data"])
            continue
        if "anomaly_label" not in sample:
            if width is None:
                raise invalid_data(f"sample {i} must be an object with {needed}")
            raise invalid_data(
                f"sample {i} has no 'anomaly_label', and others have one: label all or none",
                sample=i,
            )
        label = sample["anomaly_label"]
        if not isinstance(label, (int, float)):
            raise invalid_label(i, _shown(label))
        rows.append(sample["input_data"])
        labels.append(float(label))
        for name in TARGETS:
            if (name in sample) != (name in samples[0]):
                this, first = ("a", "none") if name in sample else ("no", "one")
                raise invalid_data(
                    f"sample {i} has {this} '{name}', sample 0 has {first}", sample=i
                )
            if name in sample:
                targets[name].append(sample[name])
    found = {name: _numbers(values, name) for name, values in targets.items() if values}
    if not labelled:
        return {"X": _inputs(rows)}
    return {"X": _inputs(rows), "y": np.asarray(labels, dtype=np.float32), **found}


def _inputs(rows: list[Any]) -> NDArray[np.float32]:
    """JSON ``input_data`` rows as one array; ragged rows are named."""
    first: tuple[int, ...] | None = None
    for i, row in enumerate(rows):
        if not isinstance(row, list) or not row:
            raise invalid_data(f"sample {i} input_data must be a non-empty list of numbers")
        shape: tuple[int, ...] = (len(row),)
        if isinstance(row[0], list):
            shape = (len(row), len(row[0]))
            if any(not isinstance(step, list) or len(step) != shape[1] for step in row):
                raise DataFileError(
                    f"Ragged data: the time steps of sample {i} differ in length",
                    error_type="ragged_data",
                    sample=i,
                )
        if first is None:
            first = shape
        elif shape != first:
            raise DataFileError(
                f"Ragged data: sample {i} has {_shape_words(shape)}, "
                f"sample 0 has {_shape_words(first)}",
                error_type="ragged_data",
                sample=i,
            )
    return _numbers(rows, "input_data")


def _numbers(values: list[Any], name: str) -> NDArray[np.float32]:
    try:
        array = np.asarray(values)
    except (ValueError, RecursionError) as exc:  # nested deeper than a sequence
        raise invalid_data(f"{name} must hold numbers: {exc}") from exc
    if array.dtype.kind not in "biuf":
        for i, value in enumerate(values):
            if np.asarray(value).dtype.kind not in "biuf":
                raise invalid_data(f"sample {i} {name} must hold only numbers", sample=i)
        raise invalid_data(f"{name} must hold only numbers")
    with np.errstate(over="ignore"):  # beyond float32 becomes inf, refused later
        return array.astype(np.float32)


def _read_npz(path: Path, width: int | None) -> Arrays:
    try:
        arrays = npz_arrays(path)
    except DataFileError:
        raise
    except (zipfile.BadZipFile, ValueError, EOFError) as exc:
        raise invalid_data(f"{path} is not a readable .npz archive: {exc}") from exc
    for name in ("X",) if width is not None and "y" not in arrays else ("X", "y"):
        if name not in arrays:
            with zipfile.ZipFile(path) as archive:
                held = [n.removesuffix(".npy") for n in archive.namelist() if n.endswith(".npy")]
            names = ", ".join(sorted(held)) or "none"
            raise invalid_data(f"{path} has no array '{name}' (found: {names})")
    return {name: as_float32(array, name, path) for name, array in arrays.items()}


def _read_npy(path: Path, width: int | None) -> Arrays:
    with path.open("rb") as fh:
        if fh.read(6) != b"\x93NUMPY":
            raise invalid_data(f"{path} is not a .npy file")
    try:
        table = load_mapped(path)
    except (ValueError, EOFError) as exc:
        raise invalid_data(f"{path} is not a readable .npy file: {exc}") from exc
    hint = "a .npy file holds (N, D + 1): the inputs, then the label"
    return _from_table(path, table, hint, width)


def _read_csv(path: Path, width: int | None) -> Arrays:
    _sniff_text(path)
    with path.open(encoding="utf-8-sig") as fh:
        lines = (line for line in fh if line.strip())
        first = next(lines, None)
        if first is None:
            raise empty_data(path)
        header = not any(_is_number(field) for field in next(csv.reader([first])))
        body = lines if header else itertools.chain([first], lines)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "input contained no data"
                table = np.loadtxt(
                    body, delimiter=",", dtype=np.float64, ndmin=2, comments=None, quotechar='"'
                )
        except ValueError as exc:
            raise _csv_problem(path, exc) from exc
    if table.shape[0] == 0:
        raise empty_data(path)
    return _from_table(path, table, "each line needs at least one input and the label", width)


def _sniff_text(path: Path) -> None:
    """Refuse, in one line and before parsing, what is not comma-separated UTF-8 text."""
    with path.open("rb") as fh:
        head = fh.read(SNIFF_BYTES)
    if b"\0" in head:
        raise invalid_data(f"{path} is not a comma-separated text file (it holds binary data)")
    try:
        text = head.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # not just a character cut at the end of the head
            raise invalid_data(
                f"{path} is not a comma-separated text file (byte {exc.start} is not UTF-8)"
            ) from exc
        text = head[: exc.start].decode("utf-8-sig")
    first = next((line for line in text.splitlines() if line.strip()), "")
    if "," not in first:
        for name, separator, tool in (("tabs", "\t", "\\t"), ("semicolons", ";", ";")):
            if separator in first:
                raise invalid_data(
                    f"{path} is not a comma-separated text file (found {name}: save it with "
                    f"commas, e.g. tr '{tool}' ',' < {path.name} > fixed.csv)"
                )


def _csv_problem(path: Path, exc: ValueError) -> DataFileError:
    """Re-read a CSV that numpy refused, to name the line and sample at fault."""
    with path.open(encoding="utf-8-sig") as fh:
        numbered = ((n, line) for n, line in enumerate(fh, start=1) if line.strip())
        width: int | None = None
        sample = 0
        for line_no, line in numbered:
            fields = next(csv.reader([line]))
            if width is None and not any(_is_number(field) for field in fields):
                continue  # the header
            if width is None:
                width = len(fields)
            elif len(fields) != width:
                return DataFileError(
                    f"Ragged data: sample {sample} (line {line_no}) has {len(fields)} columns, "
                    f"sample 0 has {width}",
                    error_type="ragged_data",
                    sample=sample,
                )
            for column, field in enumerate(fields, start=1):
                if not _is_number(field):
                    return invalid_data(
                        f"{path}, line {line_no}, column {column}: {field!r} is not a number",
                        sample=sample,
                    )
            sample += 1
    return invalid_data(f"{path}: {exc}")


def _from_table(path: Path, table: NDArray[Any], shape_hint: str, width: int | None) -> Arrays:
    """Inputs and labels from a 2-D table whose last column is the label.

    A table exactly ``width`` wide has no label column: all of it is inputs.
    """
    if width is not None and table.ndim == 2 and table.shape[1] == width and len(table):
        return {"X": as_float32(table, "X", path)}
    if table.ndim != 2 or table.shape[1] < 2:
        if table.ndim == 2 and table.shape[0] == 0:
            raise empty_data(path)
        raise invalid_data(f"{path} has shape {list(table.shape)}; {shape_hint}")
    return {
        "X": as_float32(table[:, :-1], "X", path),
        "y": as_float32(table[:, -1], "y", path),
    }


# ------------------------------------------------------------------ writing


def _write_npz(arrays: Arrays, path: Path) -> None:
    with path.open("wb") as fh:
        np.savez(fh, allow_pickle=False, **arrays)  # uncompressed, so open_dataset maps it


def _write_npy(arrays: Arrays, path: Path) -> None:
    x, y = arrays["X"], arrays["y"]
    n, d = x.shape
    table = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d + 1))
    table[:, :d] = x
    table[:, d] = y
    table.flush()
    del table


def _write_csv(arrays: Arrays, path: Path) -> None:
    x, y = arrays["X"], arrays["y"]
    d = int(x.shape[-1])
    header = ",".join([*(f"x{j}" for j in range(d)), "anomaly_label"])
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write(header + "\n")
        for rows in chunks(len(x), x[:1].nbytes):
            table = np.column_stack([x[rows], y[rows]])
            np.savetxt(fh, table, fmt=["%.9g"] * d + ["%d"], delimiter=",")  # exact float32


def _write_json(arrays: Arrays, path: Path) -> None:
    x, y = arrays["X"], arrays["y"]
    names = [name for name in TARGETS if name in arrays]
    with path.open("w", encoding="utf-8") as fh:
        fh.write("[")
        for rows in chunks(len(x), x[:1].nbytes):
            for i in range(rows.start, rows.stop):
                sample: dict[str, Any] = {
                    "input_data": x[i].tolist(),
                    "anomaly_label": int(y[i]),
                }
                sample.update({name: arrays[name][i].tolist() for name in names})
                fh.write(("\n" if i == 0 else ",\n") + json.dumps(sample))
        fh.write("\n]\n")


READERS: dict[str, Callable[[Path, int | None], Arrays]] = {
    ".json": _read_json,
    ".npz": _read_npz,
    ".npy": _read_npy,
    ".csv": _read_csv,
}
WRITERS: dict[str, Callable[[Arrays, Path], None]] = {
    ".json": _write_json,
    ".npz": _write_npz,
    ".npy": _write_npy,
    ".csv": _write_csv,
}


# ------------------------------------------------------------------ words


def _is_number(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True


def _shape_words(shape: tuple[int, ...]) -> str:
    if len(shape) == 1:
        return f"{shape[0]} values"
    steps = "1 time step" if shape[0] == 1 else f"{shape[0]} time steps"
    return f"{steps} of {shape[1]} values"
