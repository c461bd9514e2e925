"""The checkpoint's files: tensors written and read with safetensors, digests, directory fsync."""

from __future__ import annotations

import errno
import hashlib
import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from corteza.server.checkpoints.validate import CheckpointError

_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """``save_file``, with its I/O failures (a full disk) raised as the OSError they are."""
    try:
        save_file(tensors, str(path))
    except Exception as exc:  # safetensors raises its own type, the errno only in the text
        found = _OS_ERROR.search(str(exc))
        if isinstance(exc, OSError) or found is None:
            raise
        code = int(found[1])
        raise OSError(code, os.strerror(code), str(path)) from exc


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        tensors: dict[str, torch.Tensor] = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error type for a bad header
        raise CheckpointError(f"{path.name} cannot be read: {exc}") from exc
    return tensors


def digest(path: Path, *, sync: bool = False) -> dict[str, Any]:
    """sha256 and size of a file, fsyncing it on the way when asked."""
    sha = hashlib.sha256()
    size = 0
    with path.open("r+b" if sync else "rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
            size += len(chunk)
        if sync:
            os.fsync(f.fileno())
    return {"sha256": sha.hexdigest(), "bytes": size}


def fsync_dir(path: Path) -> None:
    if os.name != "posix":  # Windows cannot open a directory for fsync
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some network and FUSE file systems do not fsync directories; the rename still holds.
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
    finally:
        os.close(fd)
