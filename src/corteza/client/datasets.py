"""Datasets on the user's PC: open, check, split, batch and save them (numpy only).

Formats, chosen by the file's extension:

``.json``
    The seed's ``dataset.json``: a list of ``{"input_data": [...], "anomaly_label": 0}``
    (or a ``/train_layer2`` body, ``{"samples": [...]}``). ``input_data`` is D numbers,
    or T lists of D numbers for a sequence. Optional per-sample ``dendrite_target`` (16)
    and ``coherence_target`` (64) are kept.
``.npz``
    Arrays ``X`` (N, D) or (N, T, D), ``y`` (N,), optional ``dendrite_target`` (N, 16)
    and ``coherence_target`` (N, 64). Members stored uncompressed (what ``np.savez`` and
    :func:`save_dataset` write) are memory-mapped where they lie in the archive;
    compressed ones are read into memory once. Nothing is ever unpickled.
``.npy``
    One 2-D array (N, D + 1): the inputs, then the label as the last column, as in CSV.
    Memory-mapped. Sequences and targets need ``.npz``.
``.csv``
    Numbers, one sample per line, the label in the last column. A first line without a
    single number in it is a header and is skipped; blank lines are ignored.

Memory-mapped inputs stay on disk: :func:`iter_batches` reads only each batch's rows.
Inputs stored as float32 are mapped as they are; other number types are converted to
float32 once, in memory. Every sample is checked when a file is opened (in chunks, so a
mapped file is not copied) and the first bad one is named, in the server's words::

    data = open_dataset("data.npz")
    train, holdout = split(data, holdout=0.2, seed=0)
    for xb, yb in iter_batches(train.X, train.y, batch_size=32, seed=0, epoch=0):
        ...
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import struct
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from numpy.typing import ArrayLike, NDArray

from corteza.client.errors import InvalidDataError

FORMATS = (".json", ".npz", ".npy", ".csv")
TARGETS = {"dendrite_target": 16, "coherence_target": 64}  # optional per-sample targets
_CHECK_BYTES = 64 << 20  # rows of a mapped file are checked this many bytes at a time

_PathLike = str | os.PathLike[str]


@dataclass(frozen=True, eq=False)
class Dataset:
    """Inputs ``X``, labels ``y`` and optional targets of N samples.

    ``X`` may be a read-only memory map of a file: index it by batch
    (:func:`iter_batches`, :meth:`batches`) rather than copying it whole.
    """

    X: NDArray[np.float32]  # (N, D) or (N, T, D)
    y: NDArray[np.float32]  # (N,) of 0.0 / 1.0
    dendrite_target: NDArray[np.float32] | None = None  # (N, 16)
    coherence_target: NDArray[np.float32] | None = None  # (N, 64)

    def __post_init__(self) -> None:
        if self.X.ndim not in (2, 3):
            raise _invalid(f"X has shape {list(self.X.shape)}, expected (N, D) or (N, T, D)")
        n = len(self)
        if self.y.shape != (n,):
            raise _invalid(f"{n} samples in X but y has shape {list(self.y.shape)}")
        for name, width in TARGETS.items():
            target = getattr(self, name)
            if target is not None and target.shape != (n, width):
                raise _invalid(f"{name} has shape {list(target.shape)}, expected [{n}, {width}]")

    def __len__(self) -> int:
        return int(self.X.shape[0])

    @property
    def input_dim(self) -> int:
        """D, the width of one sample (or of one time step of a sequence)."""
        return int(self.X.shape[-1])

    def take(self, indices: ArrayLike) -> Dataset:
        """The samples at ``indices``, in that order, copied into memory."""
        idx = np.asarray(indices, dtype=np.intp)
        d, c = self.dendrite_target, self.coherence_target
        return Dataset(
            self.X[idx], self.y[idx], None if d is None else d[idx], None if c is None else c[idx]
        )

    def batches(self, batch_size: int, *, seed: int, epoch: int) -> Iterator[Dataset]:
        """Like :func:`iter_batches`, with the targets: one :class:`Dataset` per batch."""
        for idx in _batch_indices(len(self), batch_size, seed=seed, epoch=epoch):
            yield self.take(idx)


# ------------------------------------------------------------------ batches and splits


def batch_order(n: int, *, seed: int, epoch: int) -> NDArray[np.int64]:
    """The sample order of one epoch: a pure function of (seed, epoch).

    A client that resumes a run regenerates any batch from its own data.
    """
    return np.random.default_rng([seed, epoch]).permutation(n)


def iter_batches(
    X: NDArray[np.float32], y: NDArray[np.float32], *, batch_size: int, seed: int, epoch: int
) -> Iterator[tuple[NDArray[np.float32], NDArray[np.float32]]]:
    """The ``(inputs, labels)`` batches of one epoch, in :func:`batch_order`.

    Only a batch's rows are read, so ``X`` can be a memory map larger than memory.
    """
    for idx in _batch_indices(len(X), batch_size, seed=seed, epoch=epoch):
        yield np.asarray(X[idx], dtype=np.float32), np.asarray(y[idx], dtype=np.float32)


def _batch_indices(n: int, batch_size: int, *, seed: int, epoch: int) -> Iterator[NDArray[Any]]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    order = batch_order(n, seed=seed, epoch=epoch)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def split(dataset: Dataset, holdout: float = 0.2, seed: int = 0) -> tuple[Dataset, Dataset]:
    """``(train, holdout)``: a seeded, stratified split, both parts copied into memory.

    ``round(holdout * N)`` samples are held out, anomalies and normal samples in
    proportion: each class is shuffled by ``seed`` and its first share held out.
    Both parts keep the samples' original order. The same (data, holdout, seed)
    always gives the same split.
    """
    if not 0.0 < holdout < 1.0:
        raise ValueError(f"holdout must be between 0 and 1, got {holdout}")
    n = len(dataset)
    k = round(holdout * n)
    if not 0 < k < n:
        raise ValueError(f"holdout={holdout} of {n} samples leaves one part empty")
    rng = np.random.default_rng(seed)
    anomalies = np.flatnonzero(dataset.y == 1)
    normal = np.flatnonzero(dataset.y != 1)
    k_normal = min(k - round(k * anomalies.size / n), normal.size)
    held = np.concatenate(
        [rng.permutation(anomalies)[: k - k_normal], rng.permutation(normal)[:k_normal]]
    )
    keep = np.ones(n, dtype=bool)
    keep[held] = False
    return dataset.take(np.flatnonzero(keep)), dataset.take(np.sort(held))


# ------------------------------------------------------------------ opening


def open_dataset(path: _PathLike) -> Dataset:
    """Read and check a ``.json``, ``.npz``, ``.npy`` or ``.csv`` dataset.

    Raises :class:`InvalidDataError` (``error_type`` ``file_not_found``,
    ``unknown_format``, ``invalid_data``, ``empty_data``, ``ragged_data``,
    ``non_finite_input`` or ``invalid_label``) naming the first bad sample.
    """
    path = Path(path)
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise _unknown_format(path)
    if not path.exists():
        raise InvalidDataError(f"No such file: {path}", error_type="file_not_found")
    if not path.is_file():
        raise InvalidDataError(f"Not a file: {path}", error_type="file_not_found")
    if path.stat().st_size == 0:
        raise _empty(path)
    try:
        data = reader(path)
    except OSError as exc:
        raise InvalidDataError(f"Cannot read {path}: {exc}", error_type="invalid_data") from exc
    if len(data) == 0:
        raise _empty(path)
    if 0 in data.X.shape[1:]:
        raise _invalid(f"{path} has samples with no values (X has shape {list(data.X.shape)})")
    _check_values(data)
    return data


def _read_json(path: Path) -> Dataset:
    try:
        with path.open(encoding="utf-8-sig") as fh:
            document = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _invalid(f"{path} is not valid JSON: {exc}") from exc
    samples = document.get("samples") if isinstance(document, dict) else document
    if not isinstance(samples, list):
        raise _invalid(f'{path} must hold a list of {{"input_data": [...], "anomaly_label": 0}}')
    if not samples:
        raise _empty(path)
    rows: list[Any] = []
    labels: list[float] = []
    targets: dict[str, list[Any]] = {name: [] for name in TARGETS}
    for i, sample in enumerate(samples):
        if not (isinstance(sample, dict) and "input_data" in sample and "anomaly_label" in sample):
            raise _invalid(f"sample {i} must be an object with 'input_data' and 'anomaly_label'")
        label = sample["anomaly_label"]
        if not isinstance(label, (int, float)):
            raise _bad_label(i, json.dumps(label))
        rows.append(sample["input_data"])
        labels.append(float(label))
        for name in TARGETS:
            if (name in sample) != (name in samples[0]):
                this, first = ("a", "none") if name in sample else ("no", "one")
                raise _invalid(f"sample {i} has {this} '{name}', sample 0 has {first}", sample=i)
            if name in sample:
                targets[name].append(sample[name])
    found = {name: _numbers(values, name) for name, values in targets.items() if values}
    return Dataset(_inputs(rows), np.asarray(labels, dtype=np.float32), **found)


def _inputs(rows: list[Any]) -> NDArray[np.float32]:
    """JSON ``input_data`` rows as one array; ragged rows are named."""
    first: tuple[int, ...] | None = None
    for i, row in enumerate(rows):
        if not isinstance(row, list) or not row:
            raise _invalid(f"sample {i} input_data must be a non-empty list of numbers")
        shape: tuple[int, ...] = (len(row),)
        if isinstance(row[0], list):
            shape = (len(row), len(row[0]))
            if any(not isinstance(step, list) or len(step) != shape[1] for step in row):
                raise InvalidDataError(
                    f"Ragged data: the time steps of sample {i} differ in length",
                    error_type="ragged_data", sample=i,
                )  # fmt: skip
        if first is None:
            first = shape
        elif shape != first:
            raise InvalidDataError(
                f"Ragged data: sample {i} has {_shape_words(shape)}, "
                f"sample 0 has {_shape_words(first)}",
                error_type="ragged_data", sample=i,
            )  # fmt: skip
    return _numbers(rows, "input_data")


def _numbers(values: list[Any], name: str) -> NDArray[np.float32]:
    try:
        array = np.asarray(values)
    except ValueError as exc:  # nested deeper than a sequence
        raise _invalid(f"{name} must hold numbers: {exc}") from exc
    if array.dtype.kind not in "biuf":
        for i, value in enumerate(values):
            if np.asarray(value).dtype.kind not in "biuf":
                raise _invalid(f"sample {i} {name} must hold only numbers", sample=i)
        raise _invalid(f"{name} must hold only numbers")
    with np.errstate(over="ignore"):  # beyond float32 becomes inf, refused later
        return array.astype(np.float32)


def _read_npz(path: Path) -> Dataset:
    try:
        arrays = _npz_arrays(path)
    except (zipfile.BadZipFile, ValueError, EOFError) as exc:
        raise _invalid(f"{path} is not a readable .npz archive: {exc}") from exc
    for name in ("X", "y"):
        if name not in arrays:
            found = ", ".join(sorted(arrays)) or "none"
            raise _invalid(f"{path} has no array '{name}' (found: {found})")
    found_targets = {name: _as_float32(arrays[name], name) for name in TARGETS if name in arrays}
    return Dataset(_as_float32(arrays["X"], "X"), _as_float32(arrays["y"], "y"), **found_targets)


def _npz_arrays(path: Path) -> dict[str, NDArray[Any]]:
    arrays: dict[str, NDArray[Any]] = {}
    with zipfile.ZipFile(path) as archive, path.open("rb") as raw:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                continue
            array = _map_member(path, raw, info)
            if array is None:
                with archive.open(info) as member:
                    array = np.lib.format.read_array(member, allow_pickle=False)
            arrays[info.filename.removesuffix(".npy")] = array
    return arrays


def _map_member(path: Path, raw: BinaryIO, info: zipfile.ZipInfo) -> NDArray[Any] | None:
    """A memory map of an uncompressed ``.npy`` member, or None when it cannot be mapped."""
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:  # 0x1: encrypted
        return None
    raw.seek(info.header_offset)
    local = raw.read(30)  # the local file header; its name and extra fields follow
    if len(local) != 30 or local[:4] != b"PK\x03\x04":
        return None
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    start = info.header_offset + 30 + name_len + extra_len
    raw.seek(start)
    version = np.lib.format.read_magic(raw)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(raw)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(raw)
    else:
        return None
    offset = raw.tell()
    size = math.prod(shape) * dtype.itemsize
    if dtype.hasobject or size == 0 or offset - start + size > info.file_size:
        return None  # read_array refuses or reports these
    mapped: NDArray[Any] = np.memmap(
        path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C"
    )
    return mapped


def _read_npy(path: Path) -> Dataset:
    with path.open("rb") as fh:
        if fh.read(6) != b"\x93NUMPY":
            raise _invalid(f"{path} is not a .npy file")
    try:
        table = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, EOFError) as exc:
        raise _invalid(f"{path} is not a readable .npy file: {exc}") from exc
    return _from_table(path, table, "a .npy file holds (N, D + 1): the inputs, then the label")


def _read_csv(path: Path) -> Dataset:
    with path.open(encoding="utf-8-sig") as fh:
        lines = (line for line in fh if line.strip())
        first = next(lines, None)
        if first is None:
            raise _empty(path)
        header = not any(_is_number(field) for field in next(csv.reader([first])))
        body = lines if header else itertools.chain([first], lines)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "input contained no data"
                table = np.loadtxt(body, delimiter=",", dtype=np.float64, ndmin=2,
                                   comments=None, quotechar='"')  # fmt: skip
        except ValueError as exc:
            raise _csv_problem(path, exc) from exc
    if table.shape[0] == 0:
        raise _empty(path)
    return _from_table(path, table, "each line needs at least one input and the label")


def _csv_problem(path: Path, exc: ValueError) -> InvalidDataError:
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
                return InvalidDataError(
                    f"Ragged data: sample {sample} (line {line_no}) has {len(fields)} columns, "
                    f"sample 0 has {width}",
                    error_type="ragged_data", sample=sample,
                )  # fmt: skip
            for column, field in enumerate(fields, start=1):
                if not _is_number(field):
                    return _invalid(
                        f"{path}, line {line_no}, column {column}: {field!r} is not a number",
                        sample=sample,
                    )
            sample += 1
    return _invalid(f"{path}: {exc}")


def _from_table(path: Path, table: NDArray[Any], shape_hint: str) -> Dataset:
    """Inputs and labels from a 2-D table whose last column is the label."""
    if table.ndim != 2 or table.shape[1] < 2:
        if table.ndim == 2 and table.shape[0] == 0:
            raise _empty(path)
        raise _invalid(f"{path} has shape {list(table.shape)}; {shape_hint}")
    return Dataset(_as_float32(table[:, :-1], "X"), _as_float32(table[:, -1], "y"))


def _as_float32(array: NDArray[Any], name: str) -> NDArray[np.float32]:
    """Float32 as it is (a memory map stays one), other numbers converted once."""
    if array.dtype == np.float32:
        return array
    if array.dtype.kind not in "biuf":
        raise _invalid(f"{name} must hold numbers, got dtype {array.dtype}")
    with np.errstate(over="ignore"):  # beyond float32 becomes inf, refused later
        return np.asarray(array, dtype=np.float32)


def _check_values(data: Dataset) -> None:
    """Every sample finite, every label 0 or 1; mapped files are read in chunks."""
    named = [("input", data.X), *((name, getattr(data, name)) for name in TARGETS)]
    for name, array in named:
        if array is None:
            continue
        rows = max(1, _CHECK_BYTES // max(1, array[:1].nbytes))
        for start in range(0, len(array), rows):
            block = np.asarray(array[start : start + rows]).reshape(-1, math.prod(array.shape[1:]))
            finite = np.isfinite(block).all(axis=1)
            if not finite.all():
                i = start + int(np.argmin(finite))
                message = (
                    f"Non-finite input: sample {i} contains NaN or Inf"
                    if name == "input"
                    else f"Non-finite target: sample {i} {name} contains NaN or Inf"
                )
                raise InvalidDataError(message, error_type="non_finite_input", sample=i)
    valid = (data.y == 0) | (data.y == 1)
    if not valid.all():
        i = int(np.argmin(valid))
        raise _bad_label(i, _number(float(data.y[i])))


# ------------------------------------------------------------------ saving


def save_dataset(dataset: Dataset, path: _PathLike) -> Path:
    """Write ``dataset`` as ``.npz``, ``.json``, ``.csv`` or ``.npy``, by extension.

    The file appears whole or not at all (written aside, then renamed). ``.csv`` and
    ``.npy`` hold flat samples without targets; the others hold everything.
    """
    path = Path(path)
    writer = _WRITERS.get(path.suffix.lower())
    if writer is None:
        raise _unknown_format(path)
    flat_only = path.suffix.lower() in (".csv", ".npy")
    has_targets = dataset.dendrite_target is not None or dataset.coherence_target is not None
    if flat_only and (dataset.X.ndim != 2 or has_targets):
        raise _invalid(
            f"a {path.suffix} file holds flat samples without targets: "
            "save sequences or targets as .npz or .json"
        )
    if not path.parent.is_dir():
        raise InvalidDataError(f"No such directory: {path.parent}", error_type="file_not_found")
    partial = path.with_name(f".{path.name}.partial")
    try:
        writer(dataset, partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def _write_npz(dataset: Dataset, path: Path) -> None:
    arrays: dict[str, Any] = {"X": dataset.X, "y": dataset.y}
    arrays.update(
        {name: getattr(dataset, name) for name in TARGETS if getattr(dataset, name) is not None}
    )
    with path.open("wb") as fh:
        np.savez(fh, allow_pickle=False, **arrays)  # uncompressed, so open_dataset maps it


def _write_npy(dataset: Dataset, path: Path) -> None:
    n, d = dataset.X.shape
    table = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d + 1))
    table[:, :d] = dataset.X
    table[:, d] = dataset.y
    table.flush()
    del table


def _write_csv(dataset: Dataset, path: Path) -> None:
    d = dataset.input_dim
    header = ",".join([*(f"x{j}" for j in range(d)), "anomaly_label"])
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write(header + "\n")
        for rows in _chunks(len(dataset), dataset.X[:1].nbytes):
            table = np.column_stack([dataset.X[rows], dataset.y[rows]])
            np.savetxt(fh, table, fmt=["%.9g"] * d + ["%d"], delimiter=",")  # exact float32


def _write_json(dataset: Dataset, path: Path) -> None:
    names = [name for name in TARGETS if getattr(dataset, name) is not None]
    with path.open("w", encoding="utf-8") as fh:
        fh.write("[")
        for rows in _chunks(len(dataset), dataset.X[:1].nbytes):
            for i in range(rows.start, rows.stop):
                sample: dict[str, Any] = {
                    "input_data": dataset.X[i].tolist(),
                    "anomaly_label": int(dataset.y[i]),
                }
                sample.update({name: getattr(dataset, name)[i].tolist() for name in names})
                fh.write(("\n" if i == 0 else ",\n") + json.dumps(sample))
        fh.write("\n]\n")


def _chunks(n: int, row_bytes: int) -> Iterable[slice]:
    step = max(1, _CHECK_BYTES // max(1, row_bytes))
    return (slice(start, min(start + step, n)) for start in range(0, n, step))


_READERS: dict[str, Callable[[Path], Dataset]] = {
    ".json": _read_json, ".npz": _read_npz, ".npy": _read_npy, ".csv": _read_csv,
}  # fmt: skip
_WRITERS: dict[str, Callable[[Dataset, Path], None]] = {
    ".json": _write_json, ".npz": _write_npz, ".npy": _write_npy, ".csv": _write_csv,
}  # fmt: skip


# ------------------------------------------------------------------ words


def _invalid(detail: str, *, sample: int | None = None) -> InvalidDataError:
    return InvalidDataError(f"Malformed data: {detail}", error_type="invalid_data", sample=sample)


def _empty(path: Path) -> InvalidDataError:
    return InvalidDataError(f"Empty data: {path} has no samples", error_type="empty_data")


def _unknown_format(path: Path) -> InvalidDataError:
    return InvalidDataError(
        f"Unknown data format {path.suffix!r}: use .json, .npz, .npy or .csv",
        error_type="unknown_format",
    )


def _bad_label(i: int, value: str) -> InvalidDataError:
    """The server's words (corteza.wire.validation)."""
    return InvalidDataError(
        f"Invalid anomaly_label: sample {i} has {value}, expected 0 or 1",
        error_type="invalid_label", sample=i,
    )  # fmt: skip


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


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
