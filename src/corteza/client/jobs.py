"""Jobs that train on the server: start, list, show, follow and cancel them.

A job trains a dataset the server holds (:meth:`Client.upload_dataset`) in
the server's own worker, so it goes on while this PC sleeps. Its record
(:class:`~corteza.wire.jobs.JobRecord`) says where it stands: ``cursor``
batches of ``total_batches``, and each finished epoch's holdout ROC-AUC.

>>> job = client.start_job(sha, epochs=5)  # doctest: +SKIP
>>> for record in client.watch_job(job.id):  # doctest: +SKIP
...     print(record.cursor, record.total_batches)
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from corteza.client.calls import Call, M
from corteza.wire.jobs import JobList, JobRecord, JobSpec

JOBS_PATH = "/v1/jobs"
POLL_SECONDS = 0.5  # between two looks at a job being watched


def start_call(dataset: str, **spec: Any) -> Call[JobRecord]:
    """``POST /v1/jobs``; the spec is checked here first (a ValueError names the field)."""
    body = JobSpec(dataset=dataset, **spec).model_dump(exclude_unset=True)
    return Call(
        JobRecord,
        "POST",
        JOBS_PATH,
        idempotent=False,
        content=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )


def _job_path(job_id: str) -> str:
    if not job_id or not job_id.isalnum() or len(job_id) > 64:
        raise ValueError(f"a job id is letters and digits, got {job_id[:70]!r}")
    return f"{JOBS_PATH}/{job_id}"


def _changed(previous: JobRecord | None, record: JobRecord) -> bool:
    if previous is None:
        return True
    keys = ("state", "cursor", "epochs_scored")
    return any(getattr(previous, key) != getattr(record, key) for key in keys)


class JobCalls:
    """The job methods of :class:`~corteza.Client`."""

    if TYPE_CHECKING:  # the client's own

        def _run(self, call: Call[M]) -> M: ...

    def start_job(self, dataset: str, **spec: Any) -> JobRecord:
        """Queue a job on the dataset with this sha256; its record.

        ``spec`` takes :class:`~corteza.wire.jobs.JobSpec`'s fields: ``epochs``,
        ``batch_size``, ``holdout``, ``seed``, ``feedback_every``, ``until_loss``,
        ``patience``, ``lr_schedule`` ("none" or "cosine"), ``warmup``.
        """
        return self._run(start_call(dataset, **spec))

    def jobs(self) -> list[JobRecord]:
        """Every job the server knows, oldest first."""
        return self._run(Call(JobList, "GET", JOBS_PATH, idempotent=True)).jobs

    def job(self, job_id: str) -> JobRecord:
        """One job's record (:class:`~corteza.client.errors.NotFoundError` when unknown)."""
        return self._run(Call(JobRecord, "GET", _job_path(job_id), idempotent=True))

    def cancel_job(self, job_id: str) -> JobRecord:
        """Cancel a job: at once when queued, after its batches in flight when running."""
        path = f"{_job_path(job_id)}/cancel"
        return self._run(Call(JobRecord, "POST", path, idempotent=True))

    def watch_job(self, job_id: str, *, interval: float = POLL_SECONDS) -> Iterator[JobRecord]:
        """The job's record each time it moves, until it has ended (the last one yielded)."""
        previous: JobRecord | None = None
        while True:
            record = self.job(job_id)
            if _changed(previous, record):
                yield record
            if record.done:
                return
            previous = record
            time.sleep(interval)


class AsyncJobCalls:
    """The job methods of :class:`~corteza.AsyncClient`."""

    if TYPE_CHECKING:  # the client's own

        async def _run(self, call: Call[M]) -> M: ...

    async def start_job(self, dataset: str, **spec: Any) -> JobRecord:
        """As :meth:`Client.start_job`."""
        return await self._run(start_call(dataset, **spec))

    async def jobs(self) -> list[JobRecord]:
        return (await self._run(Call(JobList, "GET", JOBS_PATH, idempotent=True))).jobs

    async def job(self, job_id: str) -> JobRecord:
        return await self._run(Call(JobRecord, "GET", _job_path(job_id), idempotent=True))

    async def cancel_job(self, job_id: str) -> JobRecord:
        path = f"{_job_path(job_id)}/cancel"
        return await self._run(Call(JobRecord, "POST", path, idempotent=True))

    async def watch_job(
        self, job_id: str, *, interval: float = POLL_SECONDS
    ) -> AsyncIterator[JobRecord]:
        """As :meth:`Client.watch_job`."""
        previous: JobRecord | None = None
        while True:
            record = await self.job(job_id)
            if _changed(previous, record):
                yield record
            if record.done:
                return
            previous = record
            await asyncio.sleep(interval)
