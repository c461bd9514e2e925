"""``GET /v1/runs/{run_id}``: what the model holds of one run (exactly-once record)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from corteza.server.deps import StateDep
from corteza.server.errors import ApiError
from corteza.server.openapi import error_responses
from corteza.wire import ErrorType

router = APIRouter(prefix="/v1", tags=["training"])


@router.get("/runs/{run_id}", summary="A run's next seq and applied seqs",
            responses=error_responses(404))  # fmt: skip
async def run_record(run_id: str, state: StateDep) -> dict[str, Any]:
    """``applied`` lists every seq trained into these weights, in order: a complete
    run without loss or repetition reads ``0, 1, 2, ... next_seq - 1``."""
    run = state.runs.get(run_id)
    if run is None:
        raise ApiError(404, f"No run {run_id[:64]!r} on this server", ErrorType.NOT_FOUND)
    return {"run_id": run_id, "next_seq": run.next_seq, "applied": list(run.applied)}
