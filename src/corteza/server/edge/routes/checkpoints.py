"""``POST /v1/checkpoint`` saves now; ``GET /v1/checkpoint`` names the latest, and
``GET /v1/checkpoints/{checkpoint}/files/{name}`` downloads one file of a named one.

A pull lists once, then fetches every file of the checkpoint it was given, by
name: a save in between cannot mix two checkpoints. Each request spares that
checkpoint from pruning for ``PIN_SECONDS``, and a file is streamed from a
descriptor opened before the answer starts, so a prune mid-download removes
nothing that is being read. A checkpoint that is gone is a 404, never a 500.
``GET /v1/checkpoint/files/{name}`` (the latest, whatever it is now) stays for
older clients.

``/v1/checkpoint/uploads`` pushes one back (the logic is in ``checkpoints/uploads.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from corteza.server.checkpoints.checkpointer import CheckpointSaveError
from corteza.server.checkpoints.store import is_checkpoint_name, list_checkpoints
from corteza.server.checkpoints.uploads import UploadError, chunk_offset
from corteza.server.checkpoints.validate import CheckpointError
from corteza.server.edge.deps import StateDep
from corteza.server.edge.errors import ApiError
from corteza.server.edge.openapi import error_responses
from corteza.server.state import ServerState
from corteza.wire import ErrorType

router = APIRouter(prefix="/v1", tags=["checkpoints"])

MANIFEST = "MANIFEST.json"
BLOCK = 1 << 20  # bytes read per chunk of a download


def _require(state: ServerState) -> Path:
    if state.checkpointer.root is None:
        raise ApiError(
            409,
            "Checkpoints are off: start the server with --checkpoint-dir DIR",
            ErrorType.CHECKPOINTS_DISABLED,
        )
    return state.checkpointer.root


@router.post("/checkpoint", summary="Save a checkpoint now", responses=error_responses(409, 503))
async def save_checkpoint(state: StateDep) -> dict[str, Any]:
    """Saves after the batches already queued; answers where and what it holds.

    A save that fails (a full disk) is a 503 ``checkpoint_failed``; training goes on.
    """
    _require(state)
    try:
        path = await state.worker.checkpoint()
    except CheckpointSaveError as exc:
        raise ApiError(503, str(exc), ErrorType.CHECKPOINT_FAILED) from exc
    assert path is not None
    return {
        "status": "saved",
        "checkpoint": path.name,
        "step": state.trainer.step,
        "runs": state.runs.next_seqs(),
    }


def _gone(name: str) -> ApiError:
    return ApiError(
        404,
        f"Checkpoint {name[:80]!r} is not on this server (pruned, or never saved): pull again",
        ErrorType.NOT_FOUND,
    )


def _read_manifest(path: Path) -> tuple[bytes, dict[str, Any]]:
    """The manifest's bytes and files of checkpoint ``path``; 404 when it is gone."""
    try:
        data = (path / MANIFEST).read_bytes()
        files = json.loads(data)["files"]
    except FileNotFoundError as exc:
        raise _gone(path.name) from exc
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ApiError(
            404, f"Checkpoint {path.name} has no readable manifest", ErrorType.NOT_FOUND
        ) from exc
    if not isinstance(files, dict):
        raise ApiError(404, f"Checkpoint {path.name} has no readable manifest", ErrorType.NOT_FOUND)
    return data, files


def _latest(state: ServerState) -> Path:
    _require(state)
    path = state.checkpointer.last_path
    if path is None:
        raise ApiError(
            404, "No checkpoint saved yet: POST /v1/checkpoint first", ErrorType.NOT_FOUND
        )
    return path


def _named(state: ServerState, checkpoint: str) -> Path:
    """Checkpoint ``checkpoint`` of this server's folder: one name it wrote, or 404."""
    root = _require(state)
    if not is_checkpoint_name(checkpoint) or not (root / checkpoint).is_dir():
        raise _gone(checkpoint)
    return root / checkpoint


@router.get(
    "/checkpoint",
    summary="Name the latest checkpoint: its files with sizes and sha256",
    responses=error_responses(404, 409),
)
async def latest_checkpoint(state: StateDep) -> dict[str, Any]:
    """``checkpoint`` is its name: fetch its files from ``/v1/checkpoints/{checkpoint}/...``.

    ``manifest_sha256`` lets the puller check the manifest it downloads is this one.
    """
    path = _latest(state)
    if not (state.checkpointer.pin(path.name) and path.is_dir()):
        # A save is pruning it: the newest on disk is complete (renamed before pruning).
        newest = list_checkpoints(_require(state))
        if not newest or not state.checkpointer.pin(newest[0].name):
            raise _gone(path.name)
        path = newest[0]
    data, files = await run_in_threadpool(_read_manifest, path)
    return {
        "checkpoint": path.name,
        "files": files,
        "manifest": MANIFEST,
        "manifest_sha256": hashlib.sha256(data).hexdigest(),
    }


def _open(path: Path, name: str, files: dict[str, Any]) -> tuple[IO[bytes], int]:
    # Only names the manifest lists (or the manifest itself): never a client-made path.
    if name != MANIFEST and name not in files:
        raise ApiError(404, f"No file {name[:80]!r} in checkpoint {path.name}", ErrorType.NOT_FOUND)
    try:
        file = (path / name).open("rb")
    except FileNotFoundError as exc:
        raise _gone(path.name) from exc
    return file, os.fstat(file.fileno()).st_size


async def _download(state: ServerState, path: Path, name: str) -> StreamingResponse:
    if not state.checkpointer.pin(path.name):
        raise _gone(path.name)
    _, files = await run_in_threadpool(_read_manifest, path)
    file, size = await run_in_threadpool(_open, path, name, files)

    async def blocks() -> AsyncIterator[bytes]:
        try:
            while block := await run_in_threadpool(file.read, BLOCK):
                yield block
        finally:
            file.close()

    return StreamingResponse(
        blocks(),
        media_type="application/octet-stream",
        headers={
            "Content-Length": str(size),
            "Content-Disposition": f'attachment; filename="{name}"',
            "X-Corteza-Checkpoint": path.name,
        },
    )


@router.get(
    "/checkpoints/{checkpoint}/files/{name}",
    summary="Download one file of a named checkpoint (streamed from disk)",
    responses=error_responses(404, 409),
)
async def named_checkpoint_file(checkpoint: str, name: str, state: StateDep) -> StreamingResponse:
    """404 once the checkpoint is pruned: list ``/v1/checkpoint`` again and restart the pull."""
    return await _download(state, _named(state, checkpoint), name)


@router.get(
    "/checkpoint/files/{name}",
    summary="Download one file of the latest checkpoint (older clients; see /v1/checkpoints)",
    responses=error_responses(404, 409),
)
async def checkpoint_file(name: str, state: StateDep) -> StreamingResponse:
    return await _download(state, _latest(state), name)


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
