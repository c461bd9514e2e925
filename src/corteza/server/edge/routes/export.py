"""``GET /v1/export/onnx``: the current weights as an ONNX file, streamed as a download."""

from __future__ import annotations

import base64
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, BinaryIO

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from corteza.server.edge.deps import StateDep
from corteza.server.edge.errors import ApiError
from corteza.server.edge.openapi import error_responses
from corteza.server.engine.export import ExportFailedError, ExportUnavailableError, OnnxExports
from corteza.wire import ErrorType

ONNX_MEDIA_TYPE = "application/octet-stream"
STEP_HEADER = "X-Corteza-Step"
BLOCK = 1 << 20


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """A private folder for this server's exports, removed when it stops."""
    exports = OnnxExports(Path(tempfile.mkdtemp(prefix="corteza-onnx-")))
    app.state.onnx_exports = exports
    try:
        yield
    finally:
        exports.close()


router = APIRouter(prefix="/v1", tags=["export"], lifespan=lifespan)


def get_exports(connection: HTTPConnection) -> OnnxExports:
    exports: OnnxExports = connection.app.state.onnx_exports
    return exports


ExportsDep = Annotated[OnnxExports, Depends(get_exports)]


def _blocks(file: BinaryIO) -> Iterator[bytes]:
    with file:
        while block := file.read(BLOCK):
            yield block


@router.get(
    "/export/onnx",
    summary="Download the current weights as ONNX",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {ONNX_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
            "description": "An ONNX model: input `inputs` float32 [B, T, D] (B and T "
            "dynamic; feed [B, D] as [B, 1, D]), outputs `anomaly_probability` [B], "
            "`dendrites` [B, 16], `coherence` [B, 64]. `metadata_props` hold the model "
            "config, protocol and step.",
        },
        **error_responses(500, 501),
    },
)
async def export_onnx(request: Request, state: StateDep, exports: ExportsDep) -> StreamingResponse:
    """Exports the weights as they are after the jobs already queued (eval mode).

    The file is kept and served again until the weights change. Named
    ``corteza-step<N>.onnx``; ``Repr-Digest`` carries its sha256.
    """
    try:
        exported = await exports.latest(state.worker)
    except ExportUnavailableError as exc:
        raise ApiError(501, str(exc), ErrorType.EXPORT_UNAVAILABLE) from exc
    except ExportFailedError as exc:
        raise ApiError(
            500,
            f"ONNX export failed: {exc}; the details are in the server log",
            ErrorType.INTERNAL_ERROR,
        ) from exc
    # Opened here, so a newer export replacing the file cannot pull it from under us.
    file = await run_in_threadpool(exported.path.open, "rb")
    digest = base64.b64encode(bytes.fromhex(exported.sha256)).decode()
    return StreamingResponse(
        _blocks(file),
        media_type=ONNX_MEDIA_TYPE,
        headers={
            "Content-Disposition": f'attachment; filename="{exported.filename}"',
            "Content-Length": str(exported.size),
            "Repr-Digest": f"sha-256=:{digest}:",
            STEP_HEADER: str(exported.step),
        },
    )
