"""Checkpoint uploads (``corteza push``): files arrive in chunks, then the whole is adopted.

An upload is a folder named by a server-made id. Each file grows by chunks that
must start where the file ends; the commit hands the folder to the
checkpointer, which verifies it against the model before anything changes, and
the folder goes either way.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from corteza.server.checkpoints.store import MANIFEST_FILE
from corteza.wire import ErrorType

MAX_CHUNK = 64 * 1024 * 1024  # tunnels refuse bodies over 100 MB
UPLOADABLE = frozenset(
    {"model.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json", MANIFEST_FILE}
)
_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")
_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class UploadError(Exception):
    """A refused upload request: the route answers ``status`` with this message."""

    def __init__(self, status: int, message: str, error_type: ErrorType, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.extra = extra


def chunk_offset(content_range: str | None) -> int:
    """Where a chunk starts, from its ``Content-Range: bytes a-b/total`` (none: 0)."""
    match = _RANGE.fullmatch(content_range or "bytes 0-0/*")
    return int(match.group(1)) if match else 0


class CheckpointUploads:
    """The upload folders of one server: under the checkpoint folder, else in temp."""

    def __init__(self, checkpoint_root: Path | None) -> None:
        self.checkpoint_root = checkpoint_root

    @property
    def base(self) -> Path:
        root = self.checkpoint_root
        base = root / ".uploads" if root is not None else Path(tempfile.gettempdir()) / "corteza-up"
        base.mkdir(parents=True, exist_ok=True)
        return base

    def start(self) -> dict[str, Any]:
        """A new, empty upload; answers its id and the limits a client must respect."""
        upload_id = uuid.uuid4().hex
        (self.base / upload_id).mkdir()
        return {"upload_id": upload_id, "max_chunk_bytes": MAX_CHUNK, "files": sorted(UPLOADABLE)}

    def folder(self, upload_id: str) -> Path:
        """The folder of an upload in progress (404 for any other id)."""
        path = self.base / upload_id
        if not _UPLOAD_ID.fullmatch(upload_id) or not path.is_dir():
            raise UploadError(404, f"No upload {upload_id[:40]!r}", ErrorType.NOT_FOUND)
        return path

    @staticmethod
    def check_name(name: str) -> None:
        if name not in UPLOADABLE:
            raise UploadError(
                422,
                f"A checkpoint holds only {', '.join(sorted(UPLOADABLE))}; got {name[:80]!r}",
                ErrorType.INVALID_CHECKPOINT,
            )

    @staticmethod
    def check_chunk_size(size: int) -> None:
        if size > MAX_CHUNK:
            raise UploadError(
                413, f"Chunks are at most {MAX_CHUNK} bytes; got {size}", ErrorType.INVALID_REQUEST
            )

    def append(self, upload_id: str, name: str, offset: int, data: bytes) -> int:
        """Add ``data`` at ``offset`` of one file (blocking: run it off the event loop)."""
        path = self.folder(upload_id) / name
        size = path.stat().st_size if path.exists() else 0
        if offset != size:
            raise UploadError(
                409,
                f"Chunk starts at byte {offset}, but {path.name} has {size} bytes",
                ErrorType.INVALID_REQUEST,
                next_offset=size,
            )
        with path.open("ab") as file:
            file.write(data)
        return size + len(data)

    def discard(self, upload_id: str) -> None:
        shutil.rmtree(self.base / upload_id, ignore_errors=True)
