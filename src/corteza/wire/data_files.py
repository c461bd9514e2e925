"""Data files read and checked the same way on both sides of the wire.

The client opens a file on the user's PC (:mod:`corteza.client.data.datasets`);
the server stores an uploaded one (:mod:`corteza.server.datasets.store`). Both
read it with the readers of :mod:`corteza.wire.data_formats` and check every
sample with the batch validator (:func:`~corteza.wire.validation.validate_inputs`,
:func:`~corteza.wire.validation.validate_labels`), a chunk at a time, so a
memory-mapped file is never copied whole and the first bad sample is named by
its index in the file. Every failure is a :class:`~corteza.wire.errors.DataFileError`.
Nothing here needs torch.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from corteza.wire.data_arrays import CHUNK_BYTES, TARGETS
from corteza.wire.data_formats import READERS, Arrays
from corteza.wire.errors import BatchError, DataFileError, empty_data, invalid_data
from corteza.wire.validation import validate_inputs, validate_labels

FORMATS = tuple(READERS)  # the extensions read: .json, .npz, .npy, .csv


def unknown_format(path: Path) -> DataFileError:
    return DataFileError(
        f"Unknown data format {path.suffix!r}: use .json, .npz, .npy or .csv",
        error_type="unknown_format",
    )


def check_data_path(path: Path) -> None:
    """Refuse a folder, a missing file or an unknown extension, before anything is read."""
    if path.is_dir():
        raise DataFileError(
            f"{path} is a folder: name a data file (.json, .npz, .npy or .csv)",
            error_type="file_not_found",
        )
    if path.suffix.lower() not in READERS:
        raise unknown_format(path)
    if not path.exists():
        raise DataFileError(f"No such file: {path}", error_type="file_not_found")
    if not path.is_file():
        raise DataFileError(f"Not a file: {path}", error_type="file_not_found")
    if path.stat().st_size == 0:
        raise empty_data(path)


def read_arrays(path: Path, width: int | None, *, suffix: str | None = None) -> Arrays:
    """The arrays of ``path``, its structure checked (labels optional when ``width`` is given).

    ``suffix`` picks the format when the file's own name does not (an upload
    stored under a name the server made); the file is then not looked at first.
    """
    if suffix is None:
        check_data_path(path)
        suffix = path.suffix
    reader = READERS.get(suffix.lower())
    if reader is None:
        raise unknown_format(Path(f"data{suffix}"))
    try:
        arrays = reader(path, width)
    except OSError as exc:
        raise DataFileError(f"Cannot read {path}: {exc}", error_type="invalid_data") from exc
    x = arrays["X"]
    if x.ndim not in (2, 3):
        raise invalid_data(f"X has shape {list(x.shape)}, expected (N, D) or (N, T, D)")
    if len(x) == 0:
        raise empty_data(path)
    if 0 in x.shape[1:]:
        raise invalid_data(f"{path} has samples with no values (X has shape {list(x.shape)})")
    return arrays


def check_shapes(arrays: Arrays) -> None:
    """``X`` (N, D) or (N, T, D), ``y`` (N,) when present, targets (N, width)."""
    x = arrays["X"]
    if x.ndim not in (2, 3):
        raise invalid_data(f"X has shape {list(x.shape)}, expected (N, D) or (N, T, D)")
    n = int(x.shape[0])
    y = arrays.get("y")
    if y is not None and y.shape != (n,):
        raise invalid_data(f"{n} samples in X but y has shape {list(y.shape)}")
    for name, width in TARGETS.items():
        target = arrays.get(name)
        if target is not None and target.shape != (n, width):
            raise invalid_data(f"{name} has shape {list(target.shape)}, expected [{n}, {width}]")


def check_values(arrays: Arrays, *, input_dim: int | None = None) -> None:
    """Every sample as wide as ``input_dim`` (None: any) and finite, every label 0 or 1.

    The inputs and labels go through the batch validator; targets must be
    finite too. Mapped files are read ``CHUNK_BYTES`` at a time.
    """
    x = arrays["X"]
    width = int(x.shape[-1]) if input_dim is None else input_dim
    try:
        for rows in _chunks(x):
            validate_inputs(np.asarray(x[rows]), input_dim=width, first=rows.start)
        for name in TARGETS:
            target = arrays.get(name)
            if target is None:
                continue
            for rows in _chunks(target):
                block = np.asarray(target[rows]).reshape(-1, math.prod(target.shape[1:]))
                finite = np.isfinite(block).all(axis=1)
                if not finite.all():
                    i = rows.start + int(np.argmin(finite))
                    raise DataFileError(
                        f"Non-finite target: sample {i} {name} contains NaN or Inf",
                        error_type="non_finite_input",
                        sample=i,
                    )
        y = arrays.get("y")
        if y is not None:
            for rows in _chunks(y):
                labels = np.asarray(y[rows])
                validate_labels(labels, len(labels), first=rows.start)
    except BatchError as exc:
        raise DataFileError(
            exc.message, error_type=exc.error_type.value, sample=exc.sample
        ) from exc


def read_data_file(
    path: Path, *, suffix: str | None = None, input_dim: int | None = None
) -> Arrays:
    """Read a labelled data file and check all of it: what training takes.

    >>> arrays = read_data_file(Path("data.npz"), input_dim=1600)  # doctest: +SKIP
    >>> arrays["X"].shape, arrays["y"].shape  # doctest: +SKIP
    ((5000, 1600), (5000,))
    """
    arrays = read_arrays(path, None, suffix=suffix)
    check_shapes(arrays)
    check_values(arrays, input_dim=input_dim)
    return arrays


def _chunks(array: NDArray[Any]) -> list[slice]:
    step = max(1, CHUNK_BYTES // max(1, array[:1].nbytes))
    n = len(array)
    return [slice(start, min(start + step, n)) for start in range(0, n, step)]
