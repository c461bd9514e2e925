"""``POST /v1/checkpoint`` saves now; ``GET /v1/checkpoint[/files/NAME]`` downloads the latest."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

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

MAX_CHUNK = 64 * 1024 * 1024  # tunnels refuse bodies over 100 MB
UPLOADABLE = frozenset(
    {"model.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json", MANIFEST}
)
_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")
_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def _uploads(state: ServerState) -> Path:
    root = state.checkpointer.root
    base = root / ".uploads" if root is not None else Path(tempfile.gettempdir()) / "corteza-up"
    base.mkdir(parents=True, exist_ok=True)
    return base


def _upload_dir(state: ServerState, upload_id: str) -> Path:
    path = _uploads(state) / upload_id
    if not _UPLOAD_ID.fullmatch(upload_id) or not path.is_dir():
        raise ApiError(404, f"No upload {upload_id[:40]!r}", ErrorType.NOT_FOUND)
    return path


@router.post("/checkpoint/uploads", summary="Start uploading a checkpoint")
async def start_upload(state: StateDep) -> dict[str, Any]:
    """Answers a server-made id; the files go up in chunks of at most 64 MiB."""
    upload_id = uuid.uuid4().hex
    (_uploads(state) / upload_id).mkdir()
    return {"upload_id": upload_id, "max_chunk_bytes": MAX_CHUNK, "files": sorted(UPLOADABLE)}


def _append(path: Path, offset: int, data: bytes) -> int:
    size = path.stat().st_size if path.exists() else 0
    if offset != size:
        raise ApiError(
            409,
            f"Chunk starts at byte {offset}, but {path.name} has {size} bytes",
            ErrorType.INVALID_REQUEST,
            next_offset=size,
        )
    with path.open("ab") as file:
        file.write(data)
    return size + len(data)


@router.put(
    "/checkpoint/uploads/{upload_id}/{name}",
    summary="Upload one chunk of one checkpoint file (Content-Range: bytes a-b/total)",
    responses=error_responses(404, 409, 413, 422),
)
async def upload_chunk(
    upload_id: str, name: str, request: Request, state: StateDep
) -> dict[str, Any]:
    path = _upload_dir(state, upload_id)
    if name not in UPLOADABLE:
        raise ApiError(
            422,
            f"A checkpoint holds only {', '.join(sorted(UPLOADABLE))}; got {name[:80]!r}",
            ErrorType.INVALID_CHECKPOINT,
        )
    declared = int(request.headers.get("content-length") or 0)
    if declared > MAX_CHUNK:
        raise ApiError(
            413, f"Chunks are at most {MAX_CHUNK} bytes; got {declared}", ErrorType.INVALID_REQUEST
        )
    match = _RANGE.fullmatch(request.headers.get("content-range", "bytes 0-0/*"))
    offset = int(match.group(1)) if match else 0
    data = await request.body()
    if len(data) > MAX_CHUNK:
        raise ApiError(
            413, f"Chunks are at most {MAX_CHUNK} bytes; got {len(data)}", ErrorType.INVALID_REQUEST
        )
    size = await run_in_threadpool(_append, path / name, offset, data)
    return {"name": name, "bytes": size}


@router.post(
    "/checkpoint/uploads/{upload_id}/commit",
    summary="Verify the uploaded checkpoint against this model and continue from it",
    responses=error_responses(404, 422),
)
async def commit_upload(upload_id: str, state: StateDep) -> dict[str, Any]:
    """Checks the manifest (sha256), names, shapes and dtypes before anything changes."""
    path = _upload_dir(state, upload_id)
    try:
        runs = await state.worker.run(lambda: state.checkpointer.adopt(path))
    except CheckpointError as exc:
        raise ApiError(422, f"Refused checkpoint: {exc}", ErrorType.INVALID_CHECKPOINT) from exc
    finally:
        await run_in_threadpool(shutil.rmtree, path, True)
    return {"status": "loaded", "step": state.trainer.step, "runs": runs}
