"""Dataset uploads in progress: the state behind the tus 1.0 routes.

An upload is two files under ``<data root>/.uploads/``, both named by a
server-made id: ``<id>.part`` (the bytes so far; its size is the tus offset)
and ``<id>.json`` (the declared length, sha256 and file name). Nothing the
client sends becomes a path. Uploads survive a server restart, so a client
resumes where the server's copy ends; one idle for ``ttl_s`` is removed.

Creating an upload for a sha256 already in progress answers that upload: a
client that lost its id (a crash, Ctrl-C, another machine) finds its bytes
again by the hash alone. At most ``max_open`` uploads are in progress, and
their declared lengths count against the store's quota before a byte is sent.
When the last byte arrives the file is handed to the store
(:meth:`DatasetStore.add_file`: hash, every sample checked, converted) and the
upload is removed whatever the outcome.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from corteza.server.datasets.checks import (
    DatasetError,
    check_name,
    check_sha256,
    check_text_size,
)
from corteza.server.datasets.store import DatasetStore, StoredDataset, unwritable
from corteza.wire import ErrorType
from corteza.wire.data_files import FORMATS

logger = logging.getLogger(__name__)

DEFAULT_MAX_OPEN = 16
DEFAULT_TTL_S = 24 * 3600.0
UPLOADS_FOLDER = ".uploads"
_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class Upload:
    """One upload's record: what the client declared when it created it."""

    id: str
    sha256: str
    name: str
    length: int
    created: float


class DatasetUploads:
    """The uploads in progress of one server; every method is safe from any thread."""

    def __init__(
        self,
        store: DatasetStore,
        *,
        max_open: int = DEFAULT_MAX_OPEN,
        ttl_s: float = DEFAULT_TTL_S,
    ) -> None:
        self.store = store
        self.base = store.root / UPLOADS_FOLDER
        self.max_open = max_open
        self.ttl_s = ttl_s
        self.received_bytes = 0  # data bytes written by PATCH requests since the server started
        self._lock = threading.Lock()
        self._uploads: dict[str, Upload] = {}
        self._busy: set[str] = set()  # uploads a PATCH is writing to now
        self._load()

    # ------------------------------------------------------------ tus requests

    def create(self, *, length: int, sha256: str, name: str) -> tuple[Upload, int]:
        """A new upload, or the one in progress for ``sha256``; with its offset.

        Refused before a byte is sent: a bad hash or name (400), an unknown
        format (422), too many uploads (429), the quota (413) or the disk (507).
        """
        check_sha256(sha256)
        check_name(name)
        if Path(name).suffix.lower() not in FORMATS:
            raise DatasetError(
                422,
                f"Unknown data format {Path(name).suffix!r} of {name!r}: use .json, .npz, .npy "
                "or .csv",
                ErrorType.UNKNOWN_FORMAT,
            )
        if length < 1:
            raise DatasetError(
                400, f"Upload-Length must be at least 1, got {length}", ErrorType.INVALID_REQUEST
            )
        check_text_size(name, length)
        self._expire()
        with self._lock:
            for upload in self._uploads.values():
                if upload.sha256 != sha256:
                    continue
                if upload.length != length:
                    raise DatasetError(
                        409,
                        f"An upload of {sha256} with {upload.length} bytes is in progress; this "
                        f"one says {length}: the same bytes have the same length",
                        ErrorType.UPLOAD_CONFLICT,
                    )
                return upload, self._size(upload.id)
            if len(self._uploads) >= self.max_open:
                raise DatasetError(
                    429,
                    f"Too many uploads in progress ({self.max_open}): finish one, or wait until "
                    f"one idle for {self.ttl_s / 3600:g} h is dropped",
                    ErrorType.QUOTA_EXCEEDED,
                )
            reserved = sum(u.length for u in self._uploads.values())
            self.store.room_for(length, reserved=reserved)
            upload = Upload(uuid.uuid4().hex, sha256, name, length, time.time())
            meta = self._meta(upload.id)
            try:
                self.base.mkdir(parents=True, exist_ok=True)
                self._part(upload.id).touch()
                temp = meta.with_suffix(".tmp")
                temp.write_text(json.dumps(asdict(upload)), encoding="utf-8")
                os.replace(temp, meta)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    self._part(upload.id).unlink(missing_ok=True)
                raise unwritable(exc) from exc
            self._uploads[upload.id] = upload
        logger.info("dataset upload %s started: %s, %d bytes", upload.id, name, length)
        return upload, 0

    def get(self, upload_id: str) -> tuple[Upload, int]:
        """The upload and its offset; 404 for an id that is not one of ours."""
        with self._lock:
            upload = self._uploads.get(upload_id) if _UPLOAD_ID.fullmatch(upload_id) else None
            if upload is None:
                raise DatasetError(404, f"No upload {upload_id[:40]!r}", ErrorType.NOT_FOUND)
            return upload, self._size(upload_id)

    def begin(self, upload_id: str, offset: int) -> Upload:
        """Claim the upload for one PATCH that starts at ``offset`` (409 elsewhere, 423 busy)."""
        with self._lock:
            upload = self._uploads.get(upload_id) if _UPLOAD_ID.fullmatch(upload_id) else None
            if upload is None:
                raise DatasetError(404, f"No upload {upload_id[:40]!r}", ErrorType.NOT_FOUND)
            if upload_id in self._busy:
                raise DatasetError(
                    423,
                    f"Upload {upload_id} is receiving another request; ask its offset (HEAD) "
                    "and retry",
                    ErrorType.UPLOAD_CONFLICT,
                )
            size = self._size(upload_id)  # under the lock: no other PATCH can be writing
            if offset != size:
                raise DatasetError(
                    409,
                    f"Upload-Offset {offset} is not where upload {upload_id} ends ({size}): "
                    "ask its offset (HEAD) and continue from there",
                    ErrorType.UPLOAD_CONFLICT,
                    offset=size,
                )
            self._busy.add(upload_id)
        return upload

    def write(self, upload: Upload, data: bytes) -> int:
        """Append ``data`` (the caller checked it fits ``length``); the new offset.

        The part is opened without being created: an upload removed meanwhile
        is a 404, never a part file counted nowhere.
        """
        with self._lock:
            tracked = upload.id in self._uploads
        gone = DatasetError(404, f"No upload {upload.id!r}: it was removed", ErrorType.NOT_FOUND)
        if not tracked:
            raise gone
        try:
            fd = os.open(self._part(upload.id), os.O_WRONLY | os.O_APPEND)
        except FileNotFoundError as exc:
            raise gone from exc
        except OSError as exc:
            raise unwritable(exc) from exc
        try:
            with os.fdopen(fd, "ab") as fh:
                fh.write(data)
                size = fh.tell()
        except OSError as exc:  # a full disk: what was written stays, the offset says so
            raise unwritable(exc) from exc
        with self._lock:
            self.received_bytes += len(data)
        return size

    def end(self, upload_id: str) -> None:
        """The PATCH is over (finished, refused, or cut off)."""
        with self._lock:
            self._busy.discard(upload_id)

    def complete(self, upload: Upload, input_dim: int) -> StoredDataset:
        """Hand the whole file to the store; the upload goes either way."""
        try:
            return self.store.add_file(self._part(upload.id), upload.name, upload.sha256, input_dim)
        finally:
            self._drop(upload.id, busy_ok=True)

    def discard(self, upload_id: str) -> bool:
        """Remove the upload and its bytes (tus termination); False when there was none.

        An upload a PATCH is writing to is not removed: a 423.
        """
        return self._drop(upload_id, busy_ok=False)

    def _drop(self, upload_id: str, *, busy_ok: bool) -> bool:
        with self._lock:
            if not busy_ok and upload_id in self._busy:
                raise DatasetError(
                    423,
                    f"Upload {upload_id} is receiving a request; abandon it once that ends",
                    ErrorType.UPLOAD_CONFLICT,
                )
            found = self._uploads.pop(upload_id, None) is not None
            self._busy.discard(upload_id)
        if found:
            self._meta(upload_id).unlink(missing_ok=True)
            self._part(upload_id).unlink(missing_ok=True)
        return found

    def snapshot(self) -> dict[str, Any]:
        """What ``GET /v1/datasets`` tells of the uploads."""
        with self._lock:
            uploads = list(self._uploads.values())
            received = self.received_bytes
            in_progress = [
                {"name": u.name, "sha256": u.sha256, "offset": self._size(u.id), "length": u.length}
                for u in uploads
            ]
        return {"upload_bytes_received": received, "uploads": in_progress}

    # ------------------------------------------------------------ files

    def _part(self, upload_id: str) -> Path:
        return self.base / f"{upload_id}.part"

    def _meta(self, upload_id: str) -> Path:
        return self.base / f"{upload_id}.json"

    def _size(self, upload_id: str) -> int:
        try:
            return self._part(upload_id).stat().st_size
        except FileNotFoundError:
            return 0

    def _load(self) -> None:
        """The uploads a previous server left: kept when whole, their strays removed."""
        if not self.base.is_dir():
            return
        for meta in self.base.glob("*.json"):
            try:
                upload = Upload(**json.loads(meta.read_text(encoding="utf-8")))
            except (ValueError, TypeError, OSError):
                meta.unlink(missing_ok=True)
                continue
            if _UPLOAD_ID.fullmatch(upload.id) and meta.stem == upload.id:
                self._uploads[upload.id] = upload
        for path in self.base.iterdir():
            if path.stem not in self._uploads or path.suffix == ".tmp":
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)

    def _expire(self) -> None:
        """Drop uploads no request has touched for ``ttl_s``."""
        now = time.time()
        with self._lock:
            ids = [i for i in self._uploads if i not in self._busy]
        for upload_id in ids:
            try:
                touched = self._part(upload_id).stat().st_mtime
            except FileNotFoundError:
                touched = 0.0
            if now - touched > self.ttl_s:
                with contextlib.suppress(DatasetError):  # a PATCH began meanwhile: kept
                    if self.discard(upload_id):
                        logger.info(
                            "dataset upload %s dropped after %g s idle", upload_id, self.ttl_s
                        )
