"""Jobs that train on the server: ``POST /v1/jobs``, ``GET /v1/jobs``, ``GET /v1/jobs/{id}``,
``POST /v1/jobs/{id}/cancel``.

A job trains a dataset the server holds (``POST /v1/datasets/uploads``) in the
worker, between the batches clients send, and survives restarts of the server
(:mod:`corteza.server.jobs`). An unknown dataset or job is a 404 ``not_found``;
a spec this server cannot train is a 422 naming why. A job's best checkpoint
(``best/job-<id>/``, ``best_bytes`` in its record) goes with its record.
"""

from __future__ import annotations

from fastapi import APIRouter

from corteza.server.edge.deps import StateDep
from corteza.server.edge.errors import ApiError
from corteza.server.edge.openapi import error_responses
from corteza.server.jobs import JobError
from corteza.wire.jobs import JobList, JobRecord, JobSpec

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


def _refused(exc: JobError) -> ApiError:
    return ApiError(exc.status, exc.message, exc.error_type)


@router.post(
    "",
    status_code=201,
    response_model=JobRecord,
    summary="Queue a job",
    responses=error_responses(400, 404, 422, 429),
)
async def start_job(spec: JobSpec, state: StateDep) -> JobRecord:
    """Queued behind the jobs before it; it trains once they end. 404 when the dataset is
    not on this server; 422 for a width, sequence length, batch size or holdout it cannot
    train, or a bound that is not a finite number; 429 ``quota_exceeded`` when
    ``MAX_QUEUED_JOBS`` (32) jobs are already queued."""
    try:
        return await state.jobs.submit(spec)
    except JobError as exc:
        raise _refused(exc) from None


@router.get("", response_model=JobList, summary="Every job, oldest first")
async def list_jobs(state: StateDep) -> JobList:
    return JobList(jobs=state.jobs.list())


@router.get(
    "/{job_id}", response_model=JobRecord, summary="One job", responses=error_responses(404)
)
async def job_record(job_id: str, state: StateDep) -> JobRecord:
    """Its state, cursor (batches trained), and each finished epoch's holdout score."""
    try:
        return state.jobs.get(job_id)
    except JobError as exc:
        raise _refused(exc) from None


@router.post(
    "/{job_id}/cancel",
    response_model=JobRecord,
    summary="Cancel a job",
    responses=error_responses(404),
)
async def cancel_job(job_id: str, state: StateDep) -> JobRecord:
    """A queued job at once; a running one after its batches in flight (answered then, its
    weights in a checkpoint). A job that has ended is answered as it stands."""
    try:
        return await state.jobs.cancel(job_id)
    except JobError as exc:
        raise _refused(exc) from None
