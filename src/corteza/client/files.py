"""Durable files on this machine: what an atomic write needs after its rename."""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

# A directory fsync that the file system does not support: the rename still holds.
_UNSUPPORTED = frozenset({errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP})


def fsync_dir(directory: Path) -> None:
    """Make a rename into ``directory`` durable.

    POSIX only (Windows cannot open a directory). Some network and FUSE file
    systems refuse to fsync a directory (``EINVAL``, ``ENOTSUP``); that is not
    an error, the rename already happened. Any other failure raises.
    """
    if sys.platform == "win32":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _UNSUPPORTED:
            raise
    finally:
        os.close(fd)
