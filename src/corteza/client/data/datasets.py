"""Datasets on the user's PC: open, check, split, batch and save them (numpy only).

Formats, chosen by the file's extension (read and written by
:mod:`corteza.wire.data_formats`, checked by :mod:`corteza.wire.data_files`,
which the server uses for uploaded datasets too):

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

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
from numpy.typing import ArrayLike, NDArray

from corteza.client.errors import InvalidDataError
from corteza.wire.data_arrays import TARGETS
from corteza.wire.data_files import FORMATS, check_shapes, check_values, read_arrays, unknown_format
from corteza.wire.data_files import check_data_path as _check_data_path
from corteza.wire.data_formats import WRITERS, Arrays
from corteza.wire.errors import DataFileError, invalid_data
from corteza.wire.holdout import batch_order, split_indices

__all__ = [
    "FORMATS",
    "Dataset",
    "RowView",
    "batch_order",
    "check_data_path",
    "iter_batches",
    "open_dataset",
    "open_inputs",
    "save_dataset",
    "split",
]

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
        with _as_invalid_data():
            check_shapes(self.arrays())

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
    train, held = split_indices(dataset.y, holdout, seed)
    return dataset.pick(train), dataset.pick(held)


# ------------------------------------------------------------------ opening


def open_dataset(path: _PathLike) -> Dataset:
    """Read and check a ``.json``, ``.npz``, ``.npy`` or ``.csv`` dataset.

    Raises :class:`InvalidDataError` (``error_type`` ``file_not_found``,
    ``unknown_format``, ``invalid_data``, ``empty_data``, ``ragged_data``,
    ``non_finite_input`` or ``invalid_label``) naming the first bad sample.
    """
    with _as_invalid_data():
        arrays = read_arrays(Path(path), None)
        data = Dataset(**arrays)
        check_values(arrays)
    return data


def open_inputs(
    path: _PathLike, input_dim: int
) -> tuple[NDArray[np.float32], NDArray[np.float32] | None]:
    """``(X, y)`` to score, ``y`` None when the file has no labels.

    As :func:`open_dataset`, but labels are optional: a ``.json`` without any
    ``anomaly_label``, an ``.npz`` without ``y``, or a ``.csv`` / ``.npy`` table
    exactly ``input_dim`` wide (a table one column wider has the label last).
    """
    with _as_invalid_data():
        arrays = read_arrays(Path(path), input_dim)
        check_shapes(arrays)
        check_values(arrays)
    return arrays["X"], arrays.get("y")


def check_data_path(path: _PathLike) -> None:
    """Refuse a folder, a missing file or an unknown extension, before anything is read."""
    with _as_invalid_data():
        _check_data_path(Path(path))


@contextmanager
def _as_invalid_data() -> Iterator[None]:
    """The checks of :mod:`corteza.wire.data_files`, raised as the client's own error."""
    try:
        yield
    except DataFileError as exc:
        raise InvalidDataError(exc.message, error_type=exc.error_type, sample=exc.sample) from exc


# ------------------------------------------------------------------ saving


def save_dataset(dataset: Dataset, path: _PathLike) -> Path:
    """Write ``dataset`` as ``.npz``, ``.json``, ``.csv`` or ``.npy``, by extension.

    The file appears whole or not at all (written aside, then renamed). ``.csv`` and
    ``.npy`` hold flat samples without targets; the others hold everything.
    """
    path = Path(path)
    writer = WRITERS.get(path.suffix.lower())
    if writer is None:
        with _as_invalid_data():
            raise unknown_format(path)
    flat_only = path.suffix.lower() in (".csv", ".npy")
    has_targets = dataset.dendrite_target is not None or dataset.coherence_target is not None
    if flat_only and (dataset.X.ndim != 2 or has_targets):
        raise _invalid_data(
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


def _invalid_data(detail: str) -> InvalidDataError:
    error = invalid_data(detail)
    return InvalidDataError(error.message, error_type=error.error_type)
