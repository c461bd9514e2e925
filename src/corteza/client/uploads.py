"""Datasets on the server: upload a data file once (tus 1.0 over httpx), list, delete.

:func:`upload_dataset` hashes the file, asks ``HEAD /v1/datasets/{sha256}``
and stops there when the server has it. Otherwise it creates the upload (the
server answers the upload of that hash already in progress, with its offset,
so an upload cut by a crash or Ctrl-C goes on where the server's copy ends)
and sends the rest in ``PATCH`` requests of at most ``chunk_size`` bytes, well
under the 100 MB a tunnel lets through. A request cut by the network, or
refused because the offset moved (409) or another request still writes
(423), is followed by ``HEAD`` for the server's offset and a retry from
there; ``RESUME_TRIES`` failures in a row without progress give up.

The protocol's three requests are spoken directly over the client's own
httpx connection (its token, proxies and timeouts), which keeps the light
install free of another dependency.

:class:`DatasetCalls` and :class:`AsyncDatasetCalls` give :class:`~corteza.Client`
and :class:`~corteza.AsyncClient` their dataset methods.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import httpx

from corteza.client.backoff import Backoff
from corteza.client.calls import GATEWAY_STATUSES, Call, M
from corteza.client.errors import (
    InvalidDataError,
    NotFoundError,
    ProtocolError,
    TimeoutException,
    raise_for_error,
)
from corteza.wire.data_files import check_data_path
from corteza.wire.datasets import (
    DATASET_HEADER,
    DATASETS_PATH,
    OFFSET_CONTENT_TYPE,
    TUS_VERSION,
    UPLOADS_PATH,
    DatasetDeleted,
    DatasetList,
)
from corteza.wire.errors import DataFileError

logger = logging.getLogger(__name__)

CHUNK_SIZE = 32 * 1024 * 1024  # bytes per PATCH: under the server's 64 MiB cap and tunnels' 100 MB
PIECE = 1 << 20  # bytes read from the file (and reported to ``progress``) at a time
RESUME_TRIES = 6  # failures in a row, without a byte of progress, before giving up
RESUME_BACKOFF = Backoff(0.25, 4.0)
STORE_WAIT_S = 3600.0  # longest wait for the server to check and store a whole file
STORE_POLL_S = 1.0
# Answers after which the server's offset is asked and the upload goes on: the offset
# moved (409), another request still writes (423), a gateway or a restarting server.
RESUMABLE_STATUSES = frozenset({409, 423}) | GATEWAY_STATUSES

#: ``progress(bytes the server has, file size)``; first called with the offset it resumes from.
UploadProgress = Callable[[int, int], None]
T = TypeVar("T")


def file_sha256(path: Path) -> str:
    """The sha256 of the file's bytes: the dataset's name on the server."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(PIECE * 4):
            digest.update(block)
    return digest.hexdigest()


def upload_dataset(
    http: httpx.Client,
    path: Path,
    *,
    progress: UploadProgress | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> str:
    """Upload the data file at ``path`` unless the server has it; its sha256.

    Raises :class:`InvalidDataError` for a path that is not a data file, the
    server's typed errors (413 ``quota_exceeded``, 507, the 422 naming the
    first bad row), or :class:`httpx.TransportError` when the server stays
    out of reach.
    """
    try:
        check_data_path(path)
    except DataFileError as exc:
        raise InvalidDataError(exc.message, error_type=exc.error_type) from exc
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1 byte, got {chunk_size}")
    sha256 = file_sha256(path)
    size = path.stat().st_size
    if has_dataset(http, sha256):
        logger.info("dataset %s is on the server already", sha256[:12])
        return sha256
    location, offset = _create(http, path.name, sha256, size)
    if progress is not None:
        progress(offset, size)
    failures = 0  # in a row, without progress
    storing_since: float | None = None  # the server had every byte; it was storing them
    while True:
        try:
            response = _patch(
                http, location, path, offset, min(size - offset, chunk_size), progress
            )
        except httpx.TransportError as exc:
            reason = str(exc) or type(exc).__name__
        else:
            if response.is_success:
                moved = int(response.headers.get("upload-offset", "-1"))
                if moved == size:
                    return _stored(response, sha256)
                if moved > offset:
                    offset, failures = moved, 0
                    continue
                reason = f"the server stayed at byte {moved}"
            elif response.status_code in RESUMABLE_STATUSES:
                reason = f"HTTP {response.status_code}"
            else:
                raise_for_error(response)  # the 422 naming the first bad row, a 413...
                raise ProtocolError(f"{location} answered {response.status_code}")
        if offset == size:  # every byte is there: the server is checking and storing them
            storing_since = storing_since or time.monotonic()
            if time.monotonic() - storing_since > STORE_WAIT_S:
                raise TimeoutException(
                    f"the server has all of {path.name} but did not store it within "
                    f"{STORE_WAIT_S:g} s ({reason})"
                )
            time.sleep(STORE_POLL_S)
        else:
            failures += 1
            if failures >= RESUME_TRIES:
                raise httpx.TransportError(
                    f"upload of {path.name} stopped at byte {offset}: {reason}"
                )
            time.sleep(RESUME_BACKOFF.delay(failures - 1))
        try:
            known = _offset(http, location)
        except httpx.TransportError as exc:  # the server is restarting: try again
            logger.info("upload of %s: no offset yet (%s)", path.name, exc)
            continue
        if known is None:  # the upload is over: stored by a request whose answer was lost?
            if has_dataset(http, sha256):
                return sha256
            raise NotFoundError(
                f"The upload of {path.name} is gone from the server (refused or expired, "
                "and its answer lost): upload it again to see why",
                status=404,
                error_type="not_found",
            )
        if known > offset:
            failures = 0
        offset = known
        logger.info("upload of %s resumes at byte %d of %d (%s)", path.name, offset, size, reason)


def has_dataset(http: httpx.Client, sha256: str) -> bool:
    """Whether the server holds the dataset ``sha256`` (``HEAD /v1/datasets/{sha256}``)."""
    response = http.head(f"{DATASETS_PATH}/{sha256}")
    if response.status_code == 404:
        return False
    raise_for_error(response)
    return True


def _tus_headers(**more: str) -> dict[str, str]:
    return {"Tus-Resumable": TUS_VERSION, **more}


def _metadata(**pairs: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in pairs.items())


def _create(http: httpx.Client, name: str, sha256: str, size: int) -> tuple[str, int]:
    """The upload's URL and the bytes the server has of it (0 for a new one)."""
    response = http.post(
        UPLOADS_PATH,
        headers=_tus_headers(
            **{
                "Upload-Length": str(size),
                "Upload-Metadata": _metadata(filename=name, sha256=sha256),
            }
        ),
    )
    raise_for_error(response)
    location = response.headers.get("location")
    if response.status_code != 201 or not location:
        raise ProtocolError(f"{UPLOADS_PATH} answered {response.status_code} without a Location")
    return _same_origin(http, location), int(response.headers.get("upload-offset", 0))


def _same_origin(http: httpx.Client, location: str) -> str:
    """``location`` when it is a path, or a URL of the client's own server; else ProtocolError.

    The upload's requests carry the client's token: they go nowhere else.
    """
    url = httpx.URL(location)
    if not url.scheme and not url.host:
        return location  # a path: joined to the server's URL
    base = http.base_url
    ports = {"http": 80, "https": 443}
    if (url.scheme, url.host, url.port or ports.get(url.scheme)) != (
        base.scheme,
        base.host,
        base.port or ports.get(base.scheme),
    ):
        raise ProtocolError(
            f"{UPLOADS_PATH} answered Location {location[:200]!r}, which is not on "
            f"{base.scheme}://{base.netloc.decode('ascii')}: the upload (and its token) "
            "goes only to the server"
        )
    return location


def _offset(http: httpx.Client, location: str) -> int | None:
    """The bytes the server has of the upload (``HEAD``); None when it has no such upload."""
    response = http.head(location, headers=_tus_headers())
    if response.status_code == 404:
        return None
    raise_for_error(response)
    return int(response.headers["upload-offset"])


def _patch(
    http: httpx.Client,
    location: str,
    path: Path,
    offset: int,
    length: int,
    progress: UploadProgress | None,
) -> httpx.Response:
    """Send ``length`` bytes of the file from ``offset``, read and reported a piece at a time."""
    size = path.stat().st_size

    def pieces() -> Iterator[bytes]:
        sent = 0
        with path.open("rb") as fh:
            fh.seek(offset)
            while sent < length and (piece := fh.read(min(PIECE, length - sent))):
                yield piece
                sent += len(piece)
                if progress is not None:
                    progress(offset + sent, size)

    headers = _tus_headers(
        **{
            "Upload-Offset": str(offset),
            "Content-Type": OFFSET_CONTENT_TYPE,
            "Content-Length": str(length),
        }
    )
    return http.patch(location, content=pieces(), headers=headers)


def _stored(response: httpx.Response, sha256: str) -> str:
    named = response.headers.get(DATASET_HEADER.lower())
    if named != sha256:
        raise ProtocolError(f"the upload completed as dataset {named!r}, expected {sha256}")
    logger.info("dataset %s stored", sha256[:12])
    return sha256


class DatasetCalls:
    """The dataset methods of :class:`~corteza.Client`."""

    _http: httpx.Client

    if TYPE_CHECKING:  # the client's own

        def _run(self, call: Call[M]) -> M: ...

        def _transfer(
            self,
            http: httpx.Client,
            move: Callable[[httpx.Client, Path], T],
            path: Path,
            route: str,
        ) -> T: ...

    def upload_dataset(
        self,
        path: str | Path,
        *,
        progress: UploadProgress | None = None,
        chunk_size: int = CHUNK_SIZE,
    ) -> str:
        """Upload a data file once (skipped when the server has it, resumed when cut); its sha256.

        >>> sha = client.upload_dataset("data.npz")  # doctest: +SKIP
        """
        return self._transfer(self._http, _mover(progress, chunk_size), Path(path), UPLOADS_PATH)

    def datasets(self) -> DatasetList:
        """The server's datasets, its quota and the bytes its uploads received."""
        return self._run(Call(DatasetList, "GET", DATASETS_PATH, idempotent=True))

    def delete_dataset(self, sha256: str) -> None:
        """Remove a dataset from the server (:class:`NotFoundError` when it has none)."""
        self._run(Call(DatasetDeleted, "DELETE", f"{DATASETS_PATH}/{sha256}", idempotent=True))


class AsyncDatasetCalls:
    """The dataset methods of :class:`~corteza.AsyncClient` (the upload in a worker thread)."""

    if TYPE_CHECKING:  # the client's own

        async def _run(self, call: Call[M]) -> M: ...

        async def _transfer_aside(
            self, move: Callable[[httpx.Client, Path], T], path: Path, route: str
        ) -> T: ...

    async def upload_dataset(
        self,
        path: str | Path,
        *,
        progress: UploadProgress | None = None,
        chunk_size: int = CHUNK_SIZE,
    ) -> str:
        """As :meth:`Client.upload_dataset`; ``progress`` is called from the worker thread."""
        return await self._transfer_aside(_mover(progress, chunk_size), Path(path), UPLOADS_PATH)

    async def datasets(self) -> DatasetList:
        return await self._run(Call(DatasetList, "GET", DATASETS_PATH, idempotent=True))

    async def delete_dataset(self, sha256: str) -> None:
        await self._run(
            Call(DatasetDeleted, "DELETE", f"{DATASETS_PATH}/{sha256}", idempotent=True)
        )


def _mover(progress: UploadProgress | None, chunk_size: int) -> Callable[[httpx.Client, Path], str]:
    """:func:`upload_dataset` as a function of (http, path), as the clients' transfers take."""
    return lambda http, path: upload_dataset(http, path, progress=progress, chunk_size=chunk_size)
