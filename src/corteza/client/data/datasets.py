"""Datasets on the user's PC: open, check, split, batch and save them (numpy only).

Formats, chosen by the file's extension (read and written by
:mod:`corteza.client.data.formats`):

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

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
from numpy.typing import ArrayLike, NDArray

from corteza.client.data.formats import CHUNK_BYTES, READERS, TARGETS, WRITERS, Arrays
from corteza.client.errors import InvalidDataError, empty_data, invalid_data, invalid_label

FORMATS = (".json", ".npz", ".npy", ".csv")

_PathLike = str | os.PathLike[str]


class RowView:
    """Rows of a memory-mapped array, picked by index and read only when indexed.

    It answers what training and scoring ask of ``X`` (``len``, ``shape``,
    ``ndim``, ``dtype``, ``view[rows]``), so a split of a file larger than
    memory stays on disk.
    """

    def __init__(self, base: NDArray[np.float32], index: NDArray[np.intp]) -> None:
        self.base = base
        self.index = index

    def __len__(self) -> int:
        return len(self.index)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.index), *self.base.shape[1:])

    @property
    def ndim(self) -> int:
        return self.base.ndim

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.base.dtype

    def __getitem__(self, key: Any) -> NDArray[np.float32]:
        return np.asarray(self.base[self.index[key]])

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> NDArray[Any]:
        return np.asarray(self.base[self.index], dtype=dtype)


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
            raise invalid_data(f"X has shape {list(self.X.shape)}, expected (N, D) or (N, T, D)")
        n = len(self)
        if self.y.shape != (n,):
            raise invalid_data(f"{n} samples in X but y has shape {list(self.y.shape)}")
        for name, width in TARGETS.items():
            target = getattr(self, name)
            if target is not None and target.shape != (n, width):
                raise invalid_data(
                    f"{name} has shape {list(target.shape)}, expected [{n}, {width}]"
                )

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

    def pick(self, indices: NDArray[np.intp]) -> Dataset:
        """The samples at ``indices``: a :class:`RowView` of a memory map, else a copy."""
        if not isinstance(self.X, np.memmap):
            return self.take(indices)
        view = cast("NDArray[np.float32]", RowView(self.X, indices))  # indexed as an array
        d, c = self.dendrite_target, self.coherence_target
        return Dataset(
            view,
            np.asarray(self.y[indices]),
            None if d is None else d[indices],
            None if c is None else c[indices],
        )

    def arrays(self) -> Arrays:
        """``X``, ``y`` and the targets present: what a reader returns and a writer takes."""
        found = {name: getattr(self, name) for name in TARGETS}
        return {"X": self.X, "y": self.y, **{k: v for k, v in found.items() if v is not None}}

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
    """``(train, holdout)``: a seeded, stratified split.

    Inputs in memory are copied into the two parts; a memory-mapped file stays
    on disk: each part's ``X`` is a :class:`RowView` that reads its rows when
    indexed (a 500 MB ``.npy`` is not copied).

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
    return dataset.pick(np.flatnonzero(keep)), dataset.pick(np.sort(held))


# ------------------------------------------------------------------ opening


def open_dataset(path: _PathLike) -> Dataset:
    """Read and check a ``.json``, ``.npz``, ``.npy`` or ``.csv`` dataset.

    Raises :class:`InvalidDataError` (``error_type`` ``file_not_found``,
    ``unknown_format``, ``invalid_data``, ``empty_data``, ``ragged_data``,
    ``non_finite_input`` or ``invalid_label``) naming the first bad sample.
    """
    data = Dataset(**_read(Path(path), None))
    _check_values(data)
    return data


def open_inputs(
    path: _PathLike, input_dim: int
) -> tuple[NDArray[np.float32], NDArray[np.float32] | None]:
    """``(X, y)`` to score, ``y`` None when the file has no labels.

    As :func:`open_dataset`, but labels are optional: a ``.json`` without any
    ``anomaly_label``, an ``.npz`` without ``y``, or a ``.csv`` / ``.npy`` table
    exactly ``input_dim`` wide (a table one column wider has the label last).
    """
    arrays = _read(Path(path), input_dim)
    labels = arrays.pop("y", None)
    n = int(arrays["X"].shape[0])
    placeholder = np.zeros(n, dtype=np.float32) if labels is None else labels
    _check_values(Dataset(**arrays, y=placeholder), labelled=labels is not None)
    return arrays["X"], labels


def check_data_path(path: _PathLike) -> None:
    """Refuse a folder, a missing file or an unknown extension, before anything is read."""
    path = Path(path)
    if path.is_dir():
        raise InvalidDataError(
            f"{path} is a folder: name a data file (.json, .npz, .npy or .csv)",
            error_type="file_not_found",
        )
    if path.suffix.lower() not in READERS:
        raise _unknown_format(path)
    if not path.exists():
        raise InvalidDataError(f"No such file: {path}", error_type="file_not_found")
    if not path.is_file():
        raise InvalidDataError(f"Not a file: {path}", error_type="file_not_found")
    if path.stat().st_size == 0:
        raise empty_data(path)


def _read(path: Path, width: int | None) -> Arrays:
    """The arrays of ``path``, its structure checked (labels optional when ``width`` is given)."""
    check_data_path(path)
    try:
        arrays = READERS[path.suffix.lower()](path, width)
    except OSError as exc:
        raise InvalidDataError(f"Cannot read {path}: {exc}", error_type="invalid_data") from exc
    x = arrays["X"]
    if x.ndim not in (2, 3):
        raise invalid_data(f"X has shape {list(x.shape)}, expected (N, D) or (N, T, D)")
    if len(x) == 0:
        raise empty_data(path)
    if 0 in x.shape[1:]:
        raise invalid_data(f"{path} has samples with no values (X has shape {list(x.shape)})")
    return arrays


def _check_values(data: Dataset, *, labelled: bool = True) -> None:
    """Every sample finite, every label 0 or 1; mapped files are read in chunks."""
    named = [("input", data.X), *((name, getattr(data, name)) for name in TARGETS)]
    for name, array in named:
        if array is None:
            continue
        rows = max(1, CHUNK_BYTES // max(1, array[:1].nbytes))
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
    if not labelled:
        return
    valid = (data.y == 0) | (data.y == 1)
    if not valid.all():
        i = int(np.argmin(valid))
        raise invalid_label(i, _number(float(data.y[i])))


# ------------------------------------------------------------------ saving


def save_dataset(dataset: Dataset, path: _PathLike) -> Path:
    """Write ``dataset`` as ``.npz``, ``.json``, ``.csv`` or ``.npy``, by extension.

    The file appears whole or not at all (written aside, then renamed). ``.csv`` and
    ``.npy`` hold flat samples without targets; the others hold everything.
    """
    path = Path(path)
    writer = WRITERS.get(path.suffix.lower())
    if writer is None:
        raise _unknown_format(path)
    flat_only = path.suffix.lower() in (".csv", ".npy")
    has_targets = dataset.dendrite_target is not None or dataset.coherence_target is not None
    if flat_only and (dataset.X.ndim != 2 or has_targets):
        raise invalid_data(
            f"a {path.suffix} file holds flat samples without targets: "
            "save sequences or targets as .npz or .json"
        )
    if not path.parent.is_dir():
        raise InvalidDataError(f"No such directory: {path.parent}", error_type="file_not_found")
    partial = path.with_name(f".{path.name}.partial")
    try:
        writer(dataset.arrays(), partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


# ------------------------------------------------------------------ words


def _unknown_format(path: Path) -> InvalidDataError:
    return InvalidDataError(
        f"Unknown data format {path.suffix!r}: use .json, .npz, .npy or .csv",
        error_type="unknown_format",
    )


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)
