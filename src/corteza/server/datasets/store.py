"""Datasets kept on the server, named by the sha256 of the file they came from.

A stored dataset is a folder ``<root>/<sha256>/`` of plain ``.npy`` arrays
(``inputs``, ``labels`` and any optional targets) and a small ``meta.json``;
the arrays are opened memory-mapped and read-only, so a job reads the samples
it trains and nothing more. A folder is written under a temporary name and
renamed into place, so a crash leaves either the whole dataset or none of it
(a temporary folder left behind is removed when the store opens).

The store knows nothing of HTTP: it raises
:class:`~corteza.server.datasets.checks.DatasetError` (a status, a human
message, an ``error_type``) and :class:`UnknownDatasetError`, and the routes
answer them. A folder's files are written by :mod:`.convert`; the data folder
is held with :mod:`.folder_lock`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from corteza.server.checkpoints.files import digest, fsync_dir
from corteza.server.datasets.checks import (
    SHA256,
    DatasetError,
    check_name,
    check_sha256,
    check_text_size,
    error_type,
    size_words,
)
from corteza.server.datasets.convert import META_FILE, write_dataset
from corteza.server.datasets.folder_lock import hold, release
from corteza.wire import ErrorType
from corteza.wire.data_arrays import TARGETS, load_mapped, planned_bytes
from corteza.wire.data_files import check_shapes, check_values, read_data_file
from corteza.wire.data_formats import Arrays
from corteza.wire.errors import DataFileError

logger = logging.getLogger(__name__)

_TEMP_PREFIX = ".tmp-"
SHARED_SWEEP_AGE_S = 24 * 3600.0  # a temporary folder this old in a shared folder is a crash's


class UnknownDatasetError(KeyError):
    """No stored dataset has this sha256."""

    def __init__(self, sha256: str) -> None:
        super().__init__(sha256)
        self.sha256 = sha256
        self.message = f"No dataset {sha256[:80]} on this server"

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class StoredDataset:
    """One dataset on the server's disk, its arrays memory-mapped read-only."""

    sha256: str  # of the uploaded file's bytes
    name: str  # the file name it was uploaded under (a label, never a path)
    samples: int
    input_dim: int
    bytes: int  # what its arrays take on the server's disk
    added: float  # unix time
    inputs: NDArray[np.float32] = field(repr=False)  # (N, D) or (N, T, D)
    labels: NDArray[np.float32] = field(repr=False)  # (N,) of 0.0 / 1.0
    # "dendrite_target" (N, 16), "coherence_target" (N, 64); a NaN row means "no target".
    targets: dict[str, NDArray[np.float32]] = field(default_factory=dict, repr=False)

    @property
    def shape(self) -> list[int]:
        return [int(n) for n in self.inputs.shape]

    def describe(self) -> dict[str, Any]:
        """What ``GET /v1/datasets`` lists for it."""
        return {
            "sha256": self.sha256,
            "name": self.name,
            "samples": self.samples,
            "shape": self.shape,
            "bytes": self.bytes,
            "added": self.added,
        }


def unwritable(exc: OSError) -> DatasetError:
    """A 507 for a data folder that cannot be written (a full disk); the details to the log."""
    logger.error("the data folder cannot be written: %s", exc, exc_info=exc)
    return DatasetError(
        507,
        f"The server cannot write its data folder ({exc.strerror or exc}); see its log",
        ErrorType.INSUFFICIENT_STORAGE,
    )


class DatasetStore:
    """The datasets under ``root``, at most ``max_bytes`` of them in all (None: no quota).

    >>> store = DatasetStore(tmp_path, max_bytes=None)  # doctest: +SKIP
    >>> x, y = np.zeros((4, 8), np.float32), np.zeros(4)  # doctest: +SKIP
    >>> store.open(store.add_arrays(x, y, name="x").sha256).samples  # doctest: +SKIP
    4

    The folder is made on the first write, so a server that never stores a
    dataset leaves no trace on disk. A lock (:func:`~.folder_lock.lock_path`)
    is flock'd for as long as the store is open, so a second server process
    on the same folder is refused (:class:`~.folder_lock.DataFolderBusyError`)
    instead of sweeping the first one's temporary folders and sharing its
    quota unawares.
    """

    def __init__(self, root: Path, max_bytes: int | None, *, exclusive: bool = True) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self._lock = threading.Lock()  # adds and deletes; reads need none (renames are atomic)
        # Before the sweep: another server's temporary folders stay. A shared folder (the
        # user's cache, used by every server without a folder of its own) is not held, and
        # only temporary folders a day old are swept from it.
        self._held = hold(root) if exclusive else False
        self._sweep(0.0 if exclusive else SHARED_SWEEP_AGE_S)

    def close(self) -> None:
        """Let go of the data folder (another server may use it now)."""
        if self._held:
            self._held = False
            release(self.root)

    # ------------------------------------------------------------ reading

    def has(self, sha256: str) -> bool:
        return SHA256.fullmatch(sha256) is not None and (self.root / sha256 / META_FILE).is_file()

    def open(self, sha256: str) -> StoredDataset:
        """The dataset, memory-mapped; :class:`UnknownDatasetError` when there is none."""
        if not self.has(sha256):
            raise UnknownDatasetError(sha256)
        folder = self.root / sha256
        try:
            meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
            inputs = load_mapped(folder / "inputs.npy")
            labels = load_mapped(folder / "labels.npy")
            targets = {
                name: load_mapped(folder / f"{name}.npy")
                for name in meta.get("targets", [])
                if name in TARGETS
            }
        except FileNotFoundError as exc:  # deleted between the check and the read
            raise UnknownDatasetError(sha256) from exc
        return StoredDataset(
            sha256=sha256,
            name=str(meta["name"]),
            samples=int(meta["samples"]),
            input_dim=int(meta["input_dim"]),
            bytes=int(meta["bytes"]),
            added=float(meta["added"]),
            inputs=inputs,
            labels=labels,
            targets=targets,
        )

    def list(self) -> list[StoredDataset]:
        """Every stored dataset, oldest first."""
        if not self.root.is_dir():
            return []
        found = []
        for folder in self.root.iterdir():
            try:
                found.append(self.open(folder.name))
            except (UnknownDatasetError, ValueError, KeyError, OSError):
                continue  # a temporary folder, a stray file, or one being deleted
        return sorted(found, key=lambda d: (d.added, d.sha256))

    def used_bytes(self) -> int:
        """What the stored datasets take on disk, as their records say."""
        return sum(d.bytes for d in self.list())

    def room_for(self, size: int, *, reserved: int = 0) -> None:
        """Refuse ``size`` more bytes that the quota or the disk cannot hold (413 / 507).

        ``reserved`` counts bytes promised to uploads in progress. The disk
        must hold the file and its converted arrays at once, so twice ``size``.
        """
        self._check_quota(size, reserved=reserved)
        self._check_disk(size, 2 * size)

    def _check_disk(self, size: int, needed: int) -> None:
        free = shutil.disk_usage(_existing(self.root)).free
        if needed > free:
            raise DatasetError(
                507,
                f"Not enough disk space: storing {size_words(size)} needs "
                f"{size_words(needed)} free, the data folder has {size_words(free)}",
                ErrorType.INSUFFICIENT_STORAGE,
            )

    def _check_quota(self, size: int, *, reserved: int = 0) -> None:
        if self.max_bytes is None:
            return
        used = self.used_bytes() + reserved
        if used + size > self.max_bytes:
            left = max(0, self.max_bytes - used)
            raise DatasetError(
                413,
                f"Dataset quota exceeded: {size_words(size)} do not fit in the "
                f"{size_words(left)} left of {size_words(self.max_bytes)} (--max-data-gb; "
                "remove one with corteza datasets rm)",
                ErrorType.QUOTA_EXCEEDED,
            )

    # ------------------------------------------------------------ writing

    def delete(self, sha256: str) -> bool:
        """Remove the dataset; False when there was none."""
        if not self.has(sha256):
            return False
        with self._lock:
            folder = self.root / sha256
            doomed = self.root / f"{_TEMP_PREFIX}{uuid.uuid4().hex}"
            try:
                folder.rename(doomed)  # gone from listings at once, then removed
            except FileNotFoundError:
                return False
            shutil.rmtree(doomed, ignore_errors=True)
            fsync_dir(self.root)
        return True

    def add_file(
        self, path: Path, name: str, expected_sha256: str, input_dim: int
    ) -> StoredDataset:
        """Verify, read, validate and store the data file at ``path`` (which the caller removes).

        Raises :class:`~.checks.DatasetError`: 422 ``hash_mismatch`` when the bytes are
        not ``expected_sha256``; 413 for a text file over :data:`MAX_TEXT_BYTES`;
        413 (quota) or 507 (disk) when the arrays its headers declare would
        not fit, before anything is inflated; 422 with the batch validator's
        ``error_type`` naming the first bad row.
        """
        check_sha256(expected_sha256)
        check_name(name)
        found = digest(path)["sha256"]
        if found != expected_sha256:
            raise DatasetError(
                422,
                f"Upload corrupted: the file's sha256 is {found}, expected {expected_sha256}; "
                "nothing was stored",
                ErrorType.HASH_MISMATCH,
            )
        if self.has(expected_sha256):
            return self.open(expected_sha256)
        suffix = Path(name).suffix
        check_text_size(name, path.stat().st_size)
        try:
            planned = planned_bytes(path, suffix)
            if planned is not None:
                converted, scratch = planned
                self._check_quota(converted)
                self._check_disk(converted, converted + scratch)
            arrays = read_data_file(path, suffix=suffix, input_dim=input_dim)
        except DataFileError as exc:
            # The words name the server's own file: the sender knows it by its name.
            message = exc.message.replace(str(path), name)
            raise DatasetError(422, message, error_type(exc.error_type), sample=exc.sample) from exc
        return self._store(expected_sha256, name, input_dim, arrays)

    def add_arrays(
        self,
        inputs: NDArray[Any],
        labels: NDArray[Any],
        *,
        name: str = "arrays.npz",
        targets: dict[str, NDArray[Any]] | None = None,
        input_dim: int | None = None,
    ) -> StoredDataset:
        """Store arrays as an upload would be (tests, tools), checked by the same validator.

        The sha256 is that of the arrays' float32 bytes (each name, then its
        array, by name), so the same arrays give the same dataset.

        >>> store.add_arrays(np.ones((8, 16), np.float32), np.zeros(8)).samples  # doctest: +SKIP
        8
        """
        arrays: Arrays = {
            key: np.ascontiguousarray(value, dtype=np.float32)
            for key, value in {"X": inputs, "y": labels, **(targets or {})}.items()
        }
        width = int(arrays["X"].shape[-1]) if input_dim is None else input_dim
        try:
            check_shapes(arrays)
            check_values(arrays, input_dim=width)
        except DataFileError as exc:
            raise DatasetError(
                422, exc.message, error_type(exc.error_type), sample=exc.sample
            ) from exc
        sha = hashlib.sha256()
        for key in sorted(arrays):
            sha.update(key.encode())
            sha.update(arrays[key].tobytes())
        sha256 = sha.hexdigest()
        if self.has(sha256):
            return self.open(sha256)
        return self._store(sha256, check_name(name), width, arrays)

    def _store(
        self, sha256: str, name: str, input_dim: int, arrays: dict[str, NDArray[np.float32]]
    ) -> StoredDataset:
        temp = self.root / f"{_TEMP_PREFIX}{uuid.uuid4().hex}"
        try:
            temp.mkdir(parents=True)
            meta = write_dataset(temp, name, input_dim, arrays)
            size = int(meta["bytes"])
            with self._lock:
                if self.has(sha256):  # stored meanwhile by another upload of the same bytes
                    shutil.rmtree(temp, ignore_errors=True)
                    return self.open(sha256)
                self._check_quota(size)
                temp.rename(self.root / sha256)
                fsync_dir(self.root)
                stored = self.open(sha256)  # under the lock: a delete cannot come between
        except BaseException as exc:
            shutil.rmtree(temp, ignore_errors=True)
            if isinstance(exc, OSError):
                raise unwritable(exc) from exc
            raise
        logger.info(
            "dataset %s stored: %s, %d samples, %d bytes", sha256[:12], name, meta["samples"], size
        )
        return stored

    def _sweep(self, older_than: float) -> None:
        """Remove the temporary folders a crash left behind (``older_than`` seconds old)."""
        if not self.root.is_dir():
            return
        for folder in self.root.glob(f"{_TEMP_PREFIX}*"):
            with contextlib.suppress(OSError):
                if time.time() - folder.stat().st_mtime >= older_than:
                    shutil.rmtree(folder, ignore_errors=True)


def _existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (the disk it will live on)."""
    while not path.exists() and path.parent != path:
        path = path.parent
    return path
