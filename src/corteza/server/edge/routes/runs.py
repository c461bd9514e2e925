"""``GET /v1/runs/{run_id}``: what the model holds of one run (exactly-once record);
``POST /v1/runs/{run_id}/finish``: the client of a run sent by REST says it is done."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from corteza.server.edge.deps import StateDep
from corteza.server.edge.errors import ApiError
from corteza.server.edge.openapi import error_responses
from corteza.server.engine.runs import JOB_RUN_PREFIX
from corteza.wire import ErrorType

router = APIRouter(prefix="/v1", tags=["training"])


@router.get("/runs/{run_id}", summary="A run's next seq", responses=error_responses(404))
async def run_record(run_id: str, state: StateDep) -> dict[str, Any]:
    """Seqs ``0 .. next_seq - 1`` are in these weights, each exactly once; ``live`` when a
    stream is using the run; ``updated_at`` (unix seconds) its last batch or use. A run
    not in use is forgotten after a while (404), as the server's run book is bounded."""
    run = state.runs.get(run_id)
    if run is None:
        raise ApiError(404, f"No run {run_id[:64]!r} on this server", ErrorType.NOT_FOUND)
    return {
        "run_id": run_id,
        "next_seq": run.next_seq,
        "live": run.holders > 0,
        "updated_at": run.touched,
    }


@router.post(
    "/runs/{run_id}/finish",
    summary="Say a run sent by REST is done",
    responses=error_responses(404, 409),
)
async def finish_run(run_id: str, state: StateDep) -> dict[str, Any]:
    """Announces ``run_finished`` (events, webhooks) for a run trained by this process, as
    closing ``WS /v1/train/stream`` does for a streamed one. ``announced`` is false when
    this process trained none of the run's batches (or announced it already)."""
    run = state.runs.get(run_id)
    if run is None:
        raise ApiError(404, f"No run {run_id[:64]!r} on this server", ErrorType.NOT_FOUND)
    if run_id.startswith(JOB_RUN_PREFIX):  # a job announces its own end
        raise ApiError(409, f"Run {run_id} is a job's: it ends with the job", ErrorType.RUN_BUSY)
    announced = state.training_events.run_closed(run_id)
    return {"run_id": run_id, "next_seq": run.next_seq, "announced": announced}
