"""``POST /v1/checkpoint`` saves now; ``GET /v1/checkpoint[/files/NAME]`` downloads the latest.

``/v1/checkpoint/uploads`` pushes one back (the logic is in ``checkpoints/uploads.py``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from corteza.server.checkpoints.uploads import UploadError, chunk_offset
from corteza.server.checkpoints.validate import CheckpointError
from corteza.server.edge.deps import StateDep
from corteza.server.edge.errors import ApiError
from corteza.server.edge.openapi import error_responses
from corteza.server.state import ServerState
from corteza.wire import ErrorType

router = APIRouter(prefix="/v1", tags=["checkpoints"])

MANIFEST = "MANIFEST.json"


def _require(state: ServerState) -> Path:
    if state.checkpointer.root is None:
        raise ApiError(
            409,
            "Checkpoints are off: start the server with --checkpoint-dir DIR",
            ErrorType.CHECKPOINTS_DISABLED,
        )
    return state.checkpointer.root


@router.post("/checkpoint", summary="Save a checkpoint now", responses=error_responses(409))
async def save_checkpoint(state: StateDep) -> dict[str, Any]:
    """Saves after the batches already queued; answers where and what it holds."""
    _require(state)
    path = await state.worker.checkpoint()
    assert path is not None
    return {
        "status": "saved",
        "checkpoint": path.name,
        "step": state.trainer.step,
        "runs": state.runs.next_seqs(),
    }


def _manifest(state: ServerState) -> tuple[Path, dict[str, Any]]:
    _require(state)
    path = state.checkpointer.last_path
    if path is None or not (path / MANIFEST).exists():
        raise ApiError(
            404, "No checkpoint saved yet: POST /v1/checkpoint first", ErrorType.NOT_FOUND
        )
    manifest: dict[str, Any] = json.loads((path / MANIFEST).read_text())
    return path, manifest


@router.get(
    "/checkpoint",
    summary="Describe the latest checkpoint: its files with sizes and sha256",
    responses=error_responses(404, 409),
)
async def latest_checkpoint(state: StateDep) -> dict[str, Any]:
    path, manifest = _manifest(state)
    return {"checkpoint": path.name, "files": manifest.get("files", {}), "manifest": MANIFEST}


@router.get(
    "/checkpoint/files/{name}",
    summary="Download one file of the latest checkpoint (streamed from disk)",
    responses=error_responses(404, 409),
)
async def checkpoint_file(name: str, state: StateDep) -> FileResponse:
    path, manifest = _manifest(state)
    # Only names the manifest lists (or the manifest itself): never a client-made path.
    if name != MANIFEST and name not in manifest.get("files", {}):
        raise ApiError(404, f"No file {name[:80]!r} in checkpoint {path.name}", ErrorType.NOT_FOUND)
    return FileResponse(path / name, media_type="application/octet-stream", filename=name)


# ------------------------------------------------------------------ uploads (push)


def _refused(exc: UploadError) -> ApiError:
    return ApiError(exc.status, exc.message, exc.error_type, **exc.extra)


@router.post(
    "/checkpoint/uploads",
    summary="Start uploading a checkpoint",
    responses=error_responses(429),
)
async def start_upload(state: StateDep) -> dict[str, Any]:
    """Answers a server-made id; the files go up in chunks of at most 64 MiB.

    A few uploads may be open at once; each is capped in total bytes (the
    model's own size and a margin) and dropped after an hour without a request.
    """
    try:
        return await run_in_threadpool(state.uploads.start)
    except UploadError as exc:
        raise _refused(exc) from exc


@router.put(
    "/checkpoint/uploads/{upload_id}/{name}",
    summary="Upload one chunk of one checkpoint file (Content-Range: bytes a-b/total)",
    responses=error_responses(400, 404, 409, 413, 422),
)
async def upload_chunk(
    upload_id: str, name: str, request: Request, state: StateDep
) -> dict[str, Any]:
    uploads = state.uploads
    try:
        await run_in_threadpool(uploads.folder, upload_id)
        uploads.check_name(name)
        uploads.check_chunk_size(int(request.headers.get("content-length") or 0))
        offset = chunk_offset(request.headers.get("content-range"))
        data = await request.body()
        uploads.check_chunk_size(len(data))
        size = await run_in_threadpool(uploads.append, upload_id, name, offset, data)
    except UploadError as exc:
        raise _refused(exc) from exc
    return {"name": name, "bytes": size}


@router.post(
    "/checkpoint/uploads/{upload_id}/commit",
    summary="Verify the uploaded checkpoint against this model and continue from it",
    responses=error_responses(404, 422),
)
async def commit_upload(upload_id: str, state: StateDep) -> dict[str, Any]:
    """Checks the manifest (sha256), names, shapes and dtypes before anything changes."""
    try:
        path = await run_in_threadpool(state.uploads.ready, upload_id)
        runs = await state.worker.run(lambda: state.checkpointer.adopt(path))
    except UploadError as exc:
        raise _refused(exc) from exc
    except CheckpointError as exc:
        raise ApiError(422, f"Refused checkpoint: {exc}", ErrorType.INVALID_CHECKPOINT) from exc
    finally:
        await run_in_threadpool(state.uploads.discard, upload_id)
    return {"status": "loaded", "step": state.trainer.step, "runs": runs}
