"""Checkpoint uploads (``corteza push``): files arrive in chunks, then the whole is adopted.

An upload is a folder named by a server-made id. Each file grows by chunks that
must start where the file ends; the commit hands the folder to the
checkpointer, which verifies it against the model before anything changes, and
the folder goes either way.

What an upload may hold is bounded: at most ``max_open`` uploads at once, each
at most ``max_bytes`` in all (three copies of the model's weights, for the
model and the optimizer's two moments, plus one chunk), its JSON files at most
``MAX_JSON_BYTES`` each, and an upload idle for ``ttl_s`` is removed. The
folders live under the checkpoint folder (``.uploads``, emptied on start), or,
with checkpoints off, in a private folder made by ``tempfile.mkdtemp`` (mode
0700) and removed when the server stops.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from corteza.server.checkpoints.store import MANIFEST_FILE
from corteza.wire import ErrorType

MAX_CHUNK = 64 * 1024 * 1024  # tunnels refuse bodies over 100 MB
MAX_JSON_BYTES = 16 * 1024 * 1024  # state.json and MANIFEST.json: parsed whole at commit
DEFAULT_MAX_OPEN = 4
DEFAULT_TTL_S = 3600.0
UPLOADABLE = frozenset(
    {"model.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json", MANIFEST_FILE}
)
_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")
# Offsets are bounded: int() of thousands of digits raises (and no file is that big).
_RANGE = re.compile(r"bytes ([0-9]{1,18})-([0-9]{1,18})/([0-9]{1,18}|\*)")


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
    if content_range is None:
        return 0
    match = _RANGE.fullmatch(content_range)
    if match is None:
        raise UploadError(
            400,
            f"Content-Range must be 'bytes FIRST-LAST/TOTAL' (at most 18 digits each), "
            f"got {content_range[:60]!r}",
            ErrorType.INVALID_REQUEST,
        )
    return int(match.group(1))


def upload_budget(model: torch.nn.Module) -> int:
    """The most bytes one upload may hold for ``model``: its weights thrice, plus a chunk."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return 3 * weights + MAX_CHUNK


class CheckpointUploads:
    """The uploads in progress of one server, bounded in number, size and age.

    Thread-safe: the routes call it from the threadpool.
    """

    def __init__(
        self,
        checkpoint_root: Path | None,
        max_bytes: int,
        *,
        max_open: int = DEFAULT_MAX_OPEN,
        ttl_s: float = DEFAULT_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.checkpoint_root = checkpoint_root
        self.max_bytes = max_bytes
        self.max_open = max_open
        self.ttl_s = ttl_s
        self.clock = clock
        self._lock = threading.Lock()
        self._base: Path | None = None
        self._seen: dict[str, float] = {}  # upload id -> its last request
        self._bytes: dict[str, int] = {}  # upload id -> bytes received

    @property
    def base(self) -> Path:
        """The folder of the upload folders, made (or emptied of leftovers) on first use."""
        if self._base is None:
            if self.checkpoint_root is None:
                self._base = Path(tempfile.mkdtemp(prefix="corteza-uploads-"))
            else:
                base = self.checkpoint_root / ".uploads"
                shutil.rmtree(base, ignore_errors=True)  # a previous server's, never committed
                base.mkdir(parents=True, exist_ok=True)
                self._base = base
        return self._base

    @property
    def open_count(self) -> int:
        with self._lock:
            self._expire()
            return len(self._seen)

    def start(self) -> dict[str, Any]:
        """A new, empty upload; answers its id and the limits a client must respect."""
        with self._lock:
            self._expire()
            if len(self._seen) >= self.max_open:
                raise UploadError(
                    429,
                    f"Too many checkpoint uploads in progress ({self.max_open}): commit one, "
                    f"or wait; an upload idle for {self.ttl_s:g} s is dropped",
                    ErrorType.INVALID_REQUEST,
                )
            upload_id = uuid.uuid4().hex
            (self.base / upload_id).mkdir()
            self._seen[upload_id] = self.clock()
            self._bytes[upload_id] = 0
        return {
            "upload_id": upload_id,
            "max_chunk_bytes": MAX_CHUNK,
            "max_upload_bytes": self.max_bytes,
            "files": sorted(UPLOADABLE),
        }

    def folder(self, upload_id: str) -> Path:
        """The folder of an upload in progress (404 for any other id); marks it active."""
        with self._lock:
            return self._folder(upload_id)

    def _folder(self, upload_id: str) -> Path:
        self._expire()
        if not _UPLOAD_ID.fullmatch(upload_id) or upload_id not in self._seen:
            raise UploadError(404, f"No upload {upload_id[:40]!r}", ErrorType.NOT_FOUND)
        self._seen[upload_id] = self.clock()
        return self.base / upload_id

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
        with self._lock:
            path = self._folder(upload_id) / name
            size = path.stat().st_size if path.exists() else 0
            if offset != size:
                raise UploadError(
                    409,
                    f"Chunk starts at byte {offset}, but {path.name} has {size} bytes",
                    ErrorType.INVALID_REQUEST,
                    next_offset=size,
                )
            if name.endswith(".json") and size + len(data) > MAX_JSON_BYTES:
                raise UploadError(
                    413,
                    f"{name} would hold {size + len(data)} bytes; at most {MAX_JSON_BYTES}",
                    ErrorType.PAYLOAD_TOO_LARGE,
                )
            total = self._bytes[upload_id] + len(data)
            if total > self.max_bytes:
                raise UploadError(
                    413,
                    f"Upload too large: {total} bytes; a checkpoint of this model holds at most "
                    f"{self.max_bytes}",
                    ErrorType.PAYLOAD_TOO_LARGE,
                )
            with path.open("ab") as file:
                file.write(data)
            self._bytes[upload_id] = total
            return size + len(data)

    def ready(self, upload_id: str) -> Path:
        """The folder to adopt, once its JSON files parse (deep nesting is refused here)."""
        path = self.folder(upload_id)
        for name in ("state.json", MANIFEST_FILE):
            try:
                json.loads((path / name).read_bytes())
            except (FileNotFoundError, ValueError):
                continue  # the checkpointer's checks name these
            except RecursionError:
                raise UploadError(
                    422,
                    f"Refused checkpoint: {name} is nested too deeply",
                    ErrorType.INVALID_CHECKPOINT,
                ) from None
        return path

    def discard(self, upload_id: str) -> None:
        with self._lock:
            self._drop(upload_id)

    def _drop(self, upload_id: str) -> None:
        self._seen.pop(upload_id, None)
        self._bytes.pop(upload_id, None)
        if self._base is not None and _UPLOAD_ID.fullmatch(upload_id):
            shutil.rmtree(self._base / upload_id, ignore_errors=True)

    def _expire(self) -> None:
        oldest = self.clock() - self.ttl_s
        for upload_id in [u for u, seen in self._seen.items() if seen < oldest]:
            self._drop(upload_id)

    def close(self) -> None:
        """Remove every upload in progress (and the private folder, if one was made)."""
        with self._lock:
            for upload_id in list(self._seen):
                self._drop(upload_id)
            if self._base is not None and self.checkpoint_root is None:
                shutil.rmtree(self._base, ignore_errors=True)
                self._base = None
