"""Datasets on the server: a resumable upload (tus 1.0), then list, check, delete by sha256.

The upload speaks the tus 1.0 core protocol and its creation and termination
extensions (https://tus.io/protocols/resumable-upload):

- ``POST /v1/datasets/uploads`` with ``Upload-Length`` and ``Upload-Metadata``
  (``filename`` and ``sha256``, base64) answers 201 with ``Location`` (and
  ``Upload-Offset``: an upload of the same sha256 already in progress is
  answered, so a restarted client continues it);
- ``HEAD /v1/datasets/uploads/{id}`` answers ``Upload-Offset``;
- ``PATCH /v1/datasets/uploads/{id}`` (``Content-Type:
  application/offset+octet-stream``, ``Upload-Offset``) appends; the bytes
  are written as they arrive, so a dropped connection keeps what came. The
  request that completes the file is answered once the dataset is stored
  (``Corteza-Dataset: <sha256>``), or with the 422 naming the first bad row;
- ``DELETE /v1/datasets/uploads/{id}`` abandons it.

Every request carries ``Tus-Resumable: 1.0.0`` (412 otherwise) and the token
like every route; a PATCH body obeys ``--max-body-mb``. The state lives in
:mod:`corteza.server.datasets.uploads`, the datasets in
:mod:`corteza.server.datasets.store`.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from corteza.server.datasets.checks import DatasetError, check_sha256
from corteza.server.datasets.store import UnknownDatasetError
from corteza.server.datasets.uploads import DatasetUploads, Upload
from corteza.server.edge.deps import StateDep
from corteza.server.edge.errors import ApiError
from corteza.server.edge.openapi import error_responses
from corteza.wire import ErrorType
from corteza.wire.datasets import (
    DATASET_HEADER,
    OFFSET_CONTENT_TYPE,
    TUS_VERSION,
    DatasetInfo,
    DatasetList,
)

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

TUS_EXTENSIONS = "creation,termination"
WRITE_BYTES = 1 << 20  # bytes gathered before a write to disk (off the event loop)
_MAX_DIGITS = 18  # Upload-Length and Upload-Offset: int() of thousands of digits is slow
_WHOLE_NUMBER = re.compile(f"[0-9]{{1,{_MAX_DIGITS}}}")  # ASCII digits only: not '¹' or '١'


def _refused(exc: DatasetError) -> ApiError:
    return ApiError(exc.status, exc.message, exc.error_type, **exc.extra)


def _tus(request: Request) -> None:
    version = request.headers.get("tus-resumable")
    if version != TUS_VERSION:
        raise ApiError(
            412,
            f"Tus-Resumable must be {TUS_VERSION}, got {(version or 'none')[:20]!r}",
            ErrorType.UNSUPPORTED_PROTOCOL,
        )


def _number(request: Request, header: str) -> int:
    value = request.headers.get(header)
    if value is None or not _WHOLE_NUMBER.fullmatch(value):
        raise ApiError(
            400,
            f"{header} must be a whole number of bytes (at most {_MAX_DIGITS} digits), "
            f"got {(value or 'none')[:40]!r}",
            ErrorType.INVALID_REQUEST,
        )
    return int(value)


def _metadata(request: Request) -> dict[str, str]:
    """``Upload-Metadata: key base64,key base64`` as a dict, ``filename`` and ``sha256`` in it."""
    found: dict[str, str] = {}
    for pair in (request.headers.get("upload-metadata") or "").split(","):
        key, _, encoded = pair.strip().partition(" ")
        if not key:
            continue
        try:
            found[key] = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise ApiError(
                400,
                f"Upload-Metadata {key[:40]!r} is not base64 of UTF-8 text",
                ErrorType.INVALID_REQUEST,
            ) from exc
    missing = [key for key in ("filename", "sha256") if key not in found]
    if missing:
        raise ApiError(
            400,
            "Upload-Metadata must carry filename and sha256 (base64); missing "
            + ", ".join(missing),
            ErrorType.INVALID_REQUEST,
        )
    return found


def _headers(offset: int | None = None, **more: str) -> dict[str, str]:
    headers = {"Tus-Resumable": TUS_VERSION, "Cache-Control": "no-store", **more}
    if offset is not None:
        headers["Upload-Offset"] = str(offset)
    return headers


@router.options(
    "/uploads", status_code=204, summary="tus: the protocol version and extensions served"
)
async def upload_options(state: StateDep) -> Response:
    quota = state.datasets.max_bytes
    extra = {} if quota is None else {"Tus-Max-Size": str(quota)}
    return Response(
        status_code=204,
        headers={
            "Tus-Resumable": TUS_VERSION,
            "Tus-Version": TUS_VERSION,
            "Tus-Extension": TUS_EXTENSIONS,
            **extra,
        },
    )


@router.post(
    "/uploads",
    status_code=201,
    summary="tus: start (or find) the upload of a data file",
    responses=error_responses(400, 412, 413, 422, 429, 507),
)
async def create_upload(request: Request, state: StateDep) -> Response:
    """Refused before a byte is sent when the quota (413) or the disk (507) cannot hold it."""
    _tus(request)
    length = _number(request, "upload-length")
    meta = _metadata(request)
    try:
        upload, offset = await run_in_threadpool(
            state.dataset_uploads.create,
            length=length,
            sha256=meta["sha256"],
            name=meta["filename"],
        )
    except DatasetError as exc:
        raise _refused(exc) from exc
    location = f"{request.url.path.rstrip('/')}/{upload.id}"
    return Response(status_code=201, headers=_headers(offset, Location=location))


@router.head(
    "/uploads/{upload_id}",
    summary="tus: how many bytes of the upload arrived",
    responses=error_responses(404, 412),
)
async def upload_offset(upload_id: str, request: Request, state: StateDep) -> Response:
    _tus(request)
    try:
        upload, offset = state.dataset_uploads.get(upload_id)
    except DatasetError as exc:
        return Response(status_code=exc.status, headers=_headers())
    return Response(
        status_code=200, headers=_headers(offset, **{"Upload-Length": str(upload.length)})
    )


@router.patch(
    "/uploads/{upload_id}",
    status_code=204,
    summary="tus: append bytes at Upload-Offset; the last ones store the dataset",
    responses=error_responses(400, 404, 408, 409, 412, 413, 415, 422, 423),
)
async def upload_append(upload_id: str, request: Request, state: StateDep) -> Response:
    """204 with the new ``Upload-Offset``; on the last byte, ``Corteza-Dataset`` names it."""
    _tus(request)
    if request.headers.get("content-type", "").split(";")[0].strip() != OFFSET_CONTENT_TYPE:
        raise ApiError(
            415,
            f"A tus PATCH body is Content-Type: {OFFSET_CONTENT_TYPE}",
            ErrorType.UNSUPPORTED_MEDIA_TYPE,
        )
    offset = _number(request, "upload-offset")
    uploads = state.dataset_uploads
    try:
        upload = uploads.begin(upload_id, offset)
    except DatasetError as exc:
        raise _refused(exc) from exc
    try:  # the upload stays claimed until it is stored: a retry meanwhile is a 423
        offset = await _receive(request, uploads, upload, offset)
        if offset < upload.length:
            return Response(status_code=204, headers=_headers(offset))
        stored = await run_in_threadpool(uploads.complete, upload, state.settings.model.input_dim)
    except DatasetError as exc:
        raise _refused(exc) from exc
    except UnknownDatasetError as exc:  # deleted by another request while it was stored
        raise ApiError(
            409,
            f"Dataset {exc.sha256} was deleted while this upload stored it: upload it again",
            ErrorType.UPLOAD_CONFLICT,
        ) from exc
    finally:
        uploads.end(upload_id)
    return Response(status_code=204, headers=_headers(offset, **{DATASET_HEADER: stored.sha256}))


async def _receive(request: Request, uploads: DatasetUploads, upload: Upload, offset: int) -> int:
    """Write the body as it arrives; what came before a cut stays (its offset is answered)."""
    pending = bytearray()

    async def flush() -> None:
        nonlocal offset
        if pending:
            data = bytes(pending)
            pending.clear()  # a write that fails is not tried again by the final flush
            offset = await run_in_threadpool(uploads.write, upload, data)

    try:
        async for piece in request.stream():
            if offset + len(pending) + len(piece) > upload.length:
                await flush()
                raise ApiError(
                    413,
                    f"The body goes past Upload-Length ({upload.length} bytes); the upload "
                    f"stays at {offset}",
                    ErrorType.PAYLOAD_TOO_LARGE,
                    offset=offset,
                )
            pending += piece
            if len(pending) >= WRITE_BYTES:
                await flush()
    except ClientDisconnect:
        pass  # the client is gone; what arrived is kept for its return
    finally:
        await flush()
    return offset


@router.delete(
    "/uploads/{upload_id}",
    status_code=204,
    summary="tus: abandon an upload",
    responses=error_responses(404, 412, 423),
)
async def upload_terminate(upload_id: str, request: Request, state: StateDep) -> Response:
    """423 while a PATCH writes to it: abandon it once that request ends."""
    _tus(request)
    try:
        found = await run_in_threadpool(state.dataset_uploads.discard, upload_id)
    except DatasetError as exc:
        raise _refused(exc) from exc
    if not found:
        raise ApiError(404, f"No upload {upload_id[:40]!r}", ErrorType.NOT_FOUND)
    return Response(status_code=204, headers=_headers())


# ------------------------------------------------------------------ the datasets


@router.get("", summary="The datasets stored, the quota, and the bytes uploads received")
async def list_datasets(state: StateDep) -> DatasetList:
    """``upload_bytes_received`` counts every data byte PATCHed since the server started."""
    store = state.datasets
    datasets = await run_in_threadpool(store.list)
    return DatasetList.model_validate(
        {
            "datasets": [d.describe() for d in datasets],
            "used_bytes": sum(d.bytes for d in datasets),
            "quota_bytes": store.max_bytes,
            **state.dataset_uploads.snapshot(),
        }
    )


@router.head(
    "/{sha256}",
    summary="200 when the server has this dataset, 404 when not",
    responses={400: {"description": "not a sha256"}, 404: {"description": "not here"}},
)
async def has_dataset(sha256: str, state: StateDep) -> Response:
    try:
        check_sha256(sha256)
    except DatasetError as exc:
        return Response(status_code=exc.status)
    found = await run_in_threadpool(state.datasets.has, sha256)
    return Response(status_code=200 if found else 404)


@router.get("/{sha256}", summary="One dataset", responses=error_responses(400, 404))
async def get_dataset(sha256: str, state: StateDep) -> DatasetInfo:
    try:
        check_sha256(sha256)
        stored = await run_in_threadpool(state.datasets.open, sha256)
    except DatasetError as exc:
        raise _refused(exc) from exc
    except UnknownDatasetError as exc:
        raise ApiError(404, exc.message, ErrorType.NOT_FOUND) from exc
    return DatasetInfo.model_validate(stored.describe())


@router.delete("/{sha256}", summary="Remove a dataset", responses=error_responses(400, 404))
async def delete_dataset(sha256: str, state: StateDep) -> dict[str, Any]:
    try:
        check_sha256(sha256)
    except DatasetError as exc:
        raise _refused(exc) from exc
    if not await run_in_threadpool(state.datasets.delete, sha256):
        raise ApiError(404, f"No dataset {sha256} on this server", ErrorType.NOT_FOUND)
    return {"status": "deleted", "sha256": sha256}
