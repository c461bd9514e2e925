"""``POST /v1/checkpoint`` saves now; ``GET /v1/checkpoint[/files/NAME]`` downloads the latest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse

from corteza.server.deps import StateDep
from corteza.server.errors import ApiError
from corteza.server.openapi import error_responses
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
        "runs": {r["run_id"]: r["next_seq"] for r in state.runs.to_json()},
    }


def _manifest(state: ServerState) -> tuple[Path, dict[str, Any]]:
    _require(state)
    path = state.checkpointer.last_path
    if path is None or not (path / MANIFEST).exists():
        raise ApiError(404, "No checkpoint saved yet: POST /v1/checkpoint first",
                       ErrorType.NOT_FOUND)  # fmt: skip
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
        raise ApiError(404, f"No file {name[:80]!r} in checkpoint {path.name}",
                       ErrorType.NOT_FOUND)  # fmt: skip
    return FileResponse(path / name, media_type="application/octet-stream", filename=name)
