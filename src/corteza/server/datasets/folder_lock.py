"""The data folder held by one server process: an flock on a lock file named by its path.

:class:`~corteza.server.datasets.store.DatasetStore` holds its folder
(:func:`hold`) for as long as it is open and lets go of it (:func:`release`)
when closed, so a second server process on the same folder is refused
(:class:`DataFolderBusyError`) instead of sweeping the first one's temporary
folders and sharing its quota unawares. :func:`data_folder_busy` only looks,
for ``corteza serve`` to refuse in one line before it starts.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
import threading
from pathlib import Path


class DataFolderBusyError(RuntimeError):
    """Another server process uses this data folder."""

    def __init__(self, root: Path) -> None:
        super().__init__(
            f"the data folder {root} is in use by another corteza server: stop it, or give "
            "this one a folder of its own with --data-dir"
        )
        self.root = root


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


def hold(root: Path) -> bool:
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


def release(root: Path) -> None:
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
