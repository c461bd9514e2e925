"""Datasets kept on the server, named by the sha256 of the file they came from.

A stored dataset is a folder ``<root>/<sha256>/`` of plain ``.npy`` arrays
(``inputs``, ``labels`` and any optional targets) and a small ``meta.json``;
the arrays are opened memory-mapped and read-only, so a job reads the samples
it trains and nothing more. A folder is written under a temporary name and
renamed into place, so a crash leaves either the whole dataset or none of it
(a temporary folder left behind is removed when the store opens).

The store knows nothing of HTTP: it raises :class:`DatasetError` (a status,
a human message, an ``error_type``) and :class:`UnknownDatasetError`, and
the routes answer them.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from corteza.server.checkpoints.files import digest, fsync_dir
from corteza.wire import ErrorType
from corteza.wire.data_files import check_shapes, check_values, read_data_file
from corteza.wire.data_formats import (
    CHUNK_BYTES,
    MAX_TEXT_BYTES,
    TARGETS,
    TEXT_FORMATS,
    Arrays,
    planned_bytes,
)
from corteza.wire.errors import DataFileError

logger = logging.getLogger(__name__)

META_FILE = "meta.json"
SHA256 = re.compile(r"[0-9a-f]{64}")
_TEMP_PREFIX = ".tmp-"
_NAME_MAX = 255


class DatasetError(Exception):
    """A dataset refused: the route answers ``status`` with this message and ``error_type``."""

    def __init__(self, status: int, message: str, error_type: ErrorType, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.extra = extra


class DataFolderBusyError(RuntimeError):
    """Another server process uses this data folder."""

    def __init__(self, root: Path) -> None:
        super().__init__(
            f"the data folder {root} is in use by another corteza server: stop it, or give "
            "this one a folder of its own with --data-dir"
        )
        self.root = root


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


def check_sha256(sha256: str) -> str:
    """A dataset id from the other side: 64 lowercase hex digits, or a 400 naming it."""
    if not SHA256.fullmatch(sha256):
        raise DatasetError(
            400,
            f"A dataset is named by the sha256 of its file: 64 hex digits, got {sha256[:80]!r}",
            ErrorType.INVALID_REQUEST,
        )
    return sha256


def check_name(name: str) -> str:
    """A file name from the other side: one plain name (a label; never made a path)."""
    if (
        not name
        or len(name) > _NAME_MAX
        or not name.isprintable()
        or name in (".", "..")
        or any(c in name for c in "/\\")
    ):
        raise DatasetError(
            400,
            f"A dataset's filename must be one plain file name of 1 to {_NAME_MAX} printable "
            f"characters, without / or \\, got {name[:80]!r}",
            ErrorType.INVALID_REQUEST,
        )
    return name


class DatasetStore:
    """The datasets under ``root``, at most ``max_bytes`` of them in all (None: no quota).

    >>> store = DatasetStore(tmp_path, max_bytes=None)  # doctest: +SKIP
    >>> x, y = np.zeros((4, 8), np.float32), np.zeros(4)  # doctest: +SKIP
    >>> store.open(store.add_arrays(x, y, name="x").sha256).samples  # doctest: +SKIP
    4

    The folder is made on the first write, so a server that never stores a
    dataset leaves no trace on disk. A lock (:func:`lock_path`) is flock'd
    for as long as the store is open, so a second server process on the same
    folder is refused (:class:`DataFolderBusyError`) instead of sweeping the
    first one's temporary folders and sharing its quota unawares.
    """

    def __init__(self, root: Path, max_bytes: int | None) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self._lock = threading.Lock()  # adds and deletes; reads need none (renames are atomic)
        self._held = _hold(root)  # before the sweep: another server's temporary folders stay
        self._sweep()

    def close(self) -> None:
        """Let go of the data folder (another server may use it now)."""
        if self._held:
            self._held = False
            _release(self.root)

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
            inputs = np.load(folder / "inputs.npy", mmap_mode="r", allow_pickle=False)
            labels = np.load(folder / "labels.npy", mmap_mode="r", allow_pickle=False)
            targets = {
                name: np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False)
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
                f"Not enough disk space: storing {_size(size)} needs {_size(needed)} free, "
                f"the data folder has {_size(free)}",
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
                f"Dataset quota exceeded: {_size(size)} do not fit in the {_size(left)} left of "
                f"{_size(self.max_bytes)} (--max-data-gb; remove one with corteza datasets rm)",
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

        Raises :class:`DatasetError`: 422 ``hash_mismatch`` when the bytes are
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
            raise DatasetError(
                422, message, _error_type(exc.error_type), sample=exc.sample
            ) from exc
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
                422, exc.message, _error_type(exc.error_type), sample=exc.sample
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
            files = {"inputs": arrays["X"], "labels": arrays["y"]}
            files.update({key: arrays[key] for key in TARGETS if key in arrays})
            size = 0
            for key, array in files.items():
                target = temp / f"{key}.npy"
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
            with (temp / META_FILE).open("w", encoding="utf-8") as fh:
                json.dump(meta, fh)
                fh.flush()
                os.fsync(fh.fileno())
            fsync_dir(temp)
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

    def _sweep(self) -> None:
        """Remove the temporary folders a crash left behind."""
        if not self.root.is_dir():
            return
        for folder in self.root.glob(f"{_TEMP_PREFIX}*"):
            shutil.rmtree(folder, ignore_errors=True)


def check_text_size(name: str, size: int) -> None:
    """Refuse a .json or .csv file over :data:`MAX_TEXT_BYTES` (413): text is parsed in memory."""
    if Path(name).suffix.lower() in TEXT_FORMATS and size > MAX_TEXT_BYTES:
        raise DatasetError(
            413,
            f"{name} is {_size(size)}: a .json or .csv dataset may be at most "
            f"{_size(MAX_TEXT_BYTES)} (the server parses text in memory); save it as .npz "
            "(numpy.savez), which has no such limit",
            ErrorType.PAYLOAD_TOO_LARGE,
        )


def _save(target: Path, array: NDArray[Any]) -> None:
    """``array`` as a float32 ``.npy``, copied ``CHUNK_BYTES`` at a time (RAM stays flat)."""
    out = np.lib.format.open_memmap(target, mode="w+", dtype=np.float32, shape=array.shape)
    step = max(1, CHUNK_BYTES // max(1, array[:1].nbytes))
    with np.errstate(over="ignore"):
        for start in range(0, len(array), step):
            out[start : start + step] = array[start : start + step]
    out.flush()
    del out


# The data folders this process holds: root -> (the lock file's descriptor, stores using it).
# A flock belongs to one open file, so the stores of one process (tests) share it.
_HELD: dict[Path, tuple[int, int]] = {}
_HELD_LOCK = threading.Lock()


def lock_path(root: Path) -> Path:
    """The file flock'd for the data folder ``root``: in the temporary folder, named by its path.

    Not in ``root`` itself, so a server that stores nothing leaves no trace there.
    """
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:32]
    return Path(tempfile.gettempdir()) / f"corteza-data-{key}.lock"


def _hold(root: Path) -> bool:
    """Take the data folder for this process; :class:`DataFolderBusyError` when another has it.

    False (nothing held) when the lock file cannot be opened.
    """
    key = root.resolve()
    with _HELD_LOCK:
        if key in _HELD:
            fd, count = _HELD[key]
            _HELD[key] = (fd, count + 1)
            return True
        try:
            fd = os.open(lock_path(root), os.O_RDONLY | os.O_CREAT, 0o644)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataFolderBusyError(root) from None
        _HELD[key] = (fd, 1)
        return True


def _release(root: Path) -> None:
    key = root.resolve()
    with _HELD_LOCK:
        fd, count = _HELD.pop(key)
        if count > 1:
            _HELD[key] = (fd, count - 1)
        else:
            os.close(fd)  # the flock goes with it


def data_folder_busy(root: Path) -> str | None:
    """Why a server cannot use ``root`` (another process holds it), in one line; or None.

    Only looks: nothing is created and nothing stays held.
    """
    if root.resolve() in _HELD:
        return None
    try:
        fd = os.open(lock_path(root), os.O_RDONLY)
    except OSError:
        return None  # no lock file: no server has used the folder
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return str(DataFolderBusyError(root))
    finally:
        os.close(fd)
    return None


def _error_type(code: str) -> ErrorType:
    """The wire's code for a data file's failure (all of them are :class:`ErrorType` values)."""
    try:
        return ErrorType(code)
    except ValueError:
        return ErrorType.INVALID_DATA


def _existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (the disk it will live on)."""
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def _size(size: int) -> str:
    """A size in the unit that reads best: ``26.4 kB``, ``1.5 MB``, ``20.0 GB``."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6)):
        if abs(size) >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size / 1e3:.1f} kB"
