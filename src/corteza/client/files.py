"""Durable files on this machine: what an atomic write needs after its rename."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """Make a rename into ``directory`` durable (POSIX only; Windows cannot open a directory)."""
    if sys.platform == "win32":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
