"""A stored dataset's folder written: float32 ``.npy`` arrays and ``meta.json``, fsync'd.

:class:`~corteza.server.datasets.store.DatasetStore` writes each dataset into
a temporary folder with :func:`write_dataset`, then renames it into place.
The arrays (a data file's, perhaps memory-mapped, of any number type) are
converted to float32 ``CHUNK_BYTES`` at a time, so RAM stays flat whatever
the file's size.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from corteza.server.checkpoints.files import digest, fsync_dir
from corteza.wire.data_arrays import CHUNK_BYTES, TARGETS

META_FILE = "meta.json"


def write_dataset(
    folder: Path, name: str, input_dim: int, arrays: dict[str, NDArray[np.float32]]
) -> dict[str, Any]:
    """``arrays`` (``X``, ``y`` and any :data:`TARGETS`) written into ``folder``; its meta.

    The meta (``meta.json``) holds the file's ``name``, the ``samples``, the
    ``input_dim``, the ``bytes`` the arrays take on disk, when it was
    ``added`` and the ``targets`` stored.
    """
    files = {"inputs": arrays["X"], "labels": arrays["y"]}
    files.update({key: arrays[key] for key in TARGETS if key in arrays})
    size = 0
    for key, array in files.items():
        target = folder / f"{key}.npy"
        _save(target, array)
        size += digest(target, sync=True)["bytes"]
    meta = {
        "name": name,
        "samples": int(arrays["X"].shape[0]),
        "input_dim": input_dim,
        "bytes": size,
        "added": time.time(),
        "targets": sorted(key for key in files if key in TARGETS),
    }
    with (folder / META_FILE).open("w", encoding="utf-8") as fh:
        json.dump(meta, fh)
        fh.flush()
        os.fsync(fh.fileno())
    fsync_dir(folder)
    return meta


def _save(target: Path, array: NDArray[Any]) -> None:
    """``array`` as a float32 ``.npy``, copied ``CHUNK_BYTES`` at a time (RAM stays flat)."""
    out = np.lib.format.open_memmap(target, mode="w+", dtype=np.float32, shape=array.shape)
    step = max(1, CHUNK_BYTES // max(1, array[:1].nbytes))
    with np.errstate(over="ignore"):
        for start in range(0, len(array), step):
            out[start : start + step] = array[start : start + step]
    out.flush()
    del out
