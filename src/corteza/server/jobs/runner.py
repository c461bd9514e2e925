"""The job runner: jobs queue in order, one trains at a time, batch by batch, exactly once.

One asyncio task takes the oldest pending job and trains it
(:class:`~corteza.server.jobs.training.JobTraining`); the routes queue,
list, show and cancel jobs through :class:`JobRunner`.

Durability comes from the run book: each checkpoint saves it with the
weights, so after a kill the job resumes at the next seq of its run, and every
sample is trained exactly ``epochs`` times. After each epoch the runner scores
the holdout, saves a checkpoint, keeps the best one apart and writes the
job's record (:class:`~corteza.server.jobs.book.JobBook`).

Bounds: at most ``MAX_QUEUED_JOBS`` queued (429 ``quota_exceeded``), no spec
with Infinity or NaN, no dataset longer than ``--max-seq-len`` steps. A job
whose run the run book has forgotten (``--runs-keep``) fails rather than train
its batches a second time. A failure to record a job never stops the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from corteza.server.checkpoints.checkpointer import Checkpointer
from corteza.server.datasets.store import DatasetStore, StoredDataset, UnknownDatasetError
from corteza.server.engine.runs import RunBook, RunBusyError, RunConflictError
from corteza.server.engine.worker import TrainingWorker
from corteza.server.jobs.book import JobBook, new_job
from corteza.server.jobs.plan import JobPlan
from corteza.server.jobs.scoring import forget_best
from corteza.server.jobs.training import EarlyStopError, JobTraining, job_fingerprint
from corteza.server.observe.bus import EventBus
from corteza.server.observe.events import TrainingEvents
from corteza.server.settings import Settings
from corteza.wire import ErrorType, dimension_mismatch
from corteza.wire.jobs import MAX_QUEUED_JOBS, JobRecord, JobSpec, JobState

logger = logging.getLogger(__name__)

CANCEL_WAIT = 120.0  # seconds POST .../cancel waits for the batches in flight


class JobError(Exception):
    """A job refused: the route answers ``status`` with this message and ``error_type``."""

    def __init__(self, status: int, message: str, error_type: ErrorType) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type


class JobRunner:
    """Queues, trains, scores and records jobs; :meth:`start` in the server's event loop."""

    def __init__(
        self,
        settings: Settings,
        worker: TrainingWorker,
        runs: RunBook,
        checkpointer: Checkpointer,
        datasets: DatasetStore,
        bus: EventBus,
        training_events: TrainingEvents,
    ) -> None:
        self.settings = settings
        self.worker = worker
        self.runs = runs
        self.checkpointer = checkpointer
        self.datasets = datasets
        self.bus = bus
        self.training_events = training_events
        self.book = JobBook(settings.checkpoint_dir)
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self.training = JobTraining(worker, runs, checkpointer, bus)
        self._ended: dict[str, asyncio.Event] = {}
        self.running: JobRecord | None = None
        self.max_queued = MAX_QUEUED_JOBS

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Load the jobs of the previous process and start training the pending ones."""
        self.book.load()
        self.checkpointer.add_listener(self._checkpointed)
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="corteza-jobs")

    async def stop(self) -> None:
        """Stop taking batches; those queued finish on the worker, the job resumes next start."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.checkpointer.remove_listener(self._checkpointed)
        await self._save()  # the cursors as they stand: each at most what a checkpoint holds

    def _checkpointed(self, durable: dict[str, int]) -> None:
        """On the worker's thread after a checkpoint: the running job's cursor, which that
        checkpoint holds (its batches' answers came after their training), goes on disk."""
        job = self.running
        if job is not None and job.run_id in durable:
            self.book.save()

    # ------------------------------------------------------------ what the routes call

    async def submit(self, spec: JobSpec) -> JobRecord:
        """Queue a job; :class:`JobError` (nothing queued) for a spec this server cannot train."""
        await asyncio.to_thread(self._check, spec)
        queued = sum(job.state == "queued" for job in self.book.all())
        if queued >= self.max_queued:
            raise JobError(
                429,
                f"{queued} jobs are queued on this server, its limit: wait for one to end "
                "or cancel one (POST /v1/jobs/{id}/cancel)",
                ErrorType.QUOTA_EXCEEDED,
            )
        job = new_job(spec)
        dropped = self.book.add(job)
        await self._save()
        root = self.checkpointer.root
        if dropped and root is not None:  # after the save: a crash leaves no record without one
            await asyncio.to_thread(forget_best, root, [old.id for old in dropped])
        self.bus.publish("job_queued", job_id=job.id, run_id=job.run_id, dataset=spec.dataset)
        if self._wake is not None:
            self._wake.set()
        return job

    def get(self, job_id: str) -> JobRecord:
        job = self.book.get(job_id)
        if job is None:
            raise JobError(404, f"No job {job_id[:64]!r} on this server", ErrorType.NOT_FOUND)
        return job

    def list(self) -> list[JobRecord]:
        return self.book.all()

    def summary(self) -> dict[str, Any] | None:
        """The running job in a few fields (for ``/status``); None when none runs."""
        job = self.running
        if job is None:
            return None
        return {
            "id": job.id,
            "dataset": job.dataset_name,
            "epoch": min(job.epoch + 1, job.spec.epochs),
            "epochs": job.spec.epochs,
            "cursor": job.cursor,
            "total_batches": job.total_batches,
            "holdout_auc": [e.holdout_auc for e in job.epochs_scored],
        }

    async def cancel(self, job_id: str) -> JobRecord:
        """Cancel a queued job at once, a running one after its batches in flight."""
        job = self.get(job_id)
        if job.done:
            return job
        if job.state == "queued":
            await self._finish(job, "cancelled", "cancelled")
            return job
        if not job.cancel_requested:  # saved at once: a restart before the job stops cancels it
            job.cancel_requested = True
            await self._save()
        self.training.cancelling.add(job.id)
        ended = self._ended.setdefault(job.id, asyncio.Event())
        with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
            await asyncio.wait_for(ended.wait(), CANCEL_WAIT)
        return job

    def _check(self, spec: JobSpec) -> StoredDataset:
        """The dataset, or :class:`JobError` naming what this server cannot train."""
        try:
            dataset = self.datasets.open(spec.dataset)
        except UnknownDatasetError as exc:
            raise JobError(404, exc.message, ErrorType.NOT_FOUND) from None
        width = self.settings.model.input_dim
        if dataset.input_dim != width:
            error = dimension_mismatch(width, dataset.input_dim)
            raise JobError(422, f"{error.message} (dataset {dataset.name})", error.error_type)
        shape = dataset.shape
        if len(shape) == 3 and shape[1] > self.settings.max_seq_len:
            raise JobError(
                422,
                f"Sequence too long: {shape[1]} time steps (dataset {dataset.name}); this "
                f"server takes at most {self.settings.max_seq_len} (--max-seq-len)",
                ErrorType.SEQUENCE_TOO_LONG,
            )
        if spec.batch_size > self.settings.max_batch_samples:
            raise JobError(
                422,
                f"batch_size {spec.batch_size} exceeds this server's "
                f"{self.settings.max_batch_samples} samples per batch (its --max-batch-samples)",
                ErrorType.BATCH_TOO_LARGE,
            )
        if spec.patience is not None and spec.holdout == 0:
            raise JobError(
                422,
                "patience needs a holdout to score after each epoch: give holdout > 0",
                ErrorType.INVALID_REQUEST,
            )
        if spec.holdout > 0 and not 0 < round(spec.holdout * dataset.samples) < dataset.samples:
            raise JobError(
                422,
                f"holdout={spec.holdout} of {dataset.samples} samples leaves one part empty",
                ErrorType.INVALID_REQUEST,
            )
        return dataset

    # ------------------------------------------------------------ the loop

    async def _loop(self) -> None:
        assert self._wake is not None
        while True:
            pending = self.book.pending()
            if not pending:
                self._wake.clear()
                if not self.book.pending():
                    await self._wake.wait()
                continue
            job = pending[0]
            try:
                await self._run(job)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a failure of one job never stops the queue
                if not isinstance(exc, JobError):
                    logger.exception("job %s failed", job.id)
                message = exc.message if isinstance(exc, JobError) else f"{exc}"
                if not job.done:  # not cancelled meanwhile
                    try:
                        await self._finish(job, "failed", f"failed: {message}", error=message)
                    except Exception:  # the queue goes on: the job is failed in memory
                        logger.exception("job %s: recording its failure failed", job.id)
                        job.state = "failed"
            finally:
                self.running = None

    async def _run(self, job: JobRecord) -> None:
        try:
            dataset = await asyncio.to_thread(self._check, job.spec)
        except JobError as exc:
            raise JobError(
                exc.status, f"{exc.message}; the job cannot run", exc.error_type
            ) from None
        plan = await asyncio.to_thread(JobPlan, dataset, job.spec)  # the split reads labels
        if job.done:  # cancelled while it was being opened
            return
        job.state, job.started = "running", job.started or time.time()
        training = self.training
        if job.base_lr is None:
            job.base_lr = training.current_lr()
        base = job.base_lr
        job.dataset_name, job.train_samples = dataset.name, len(plan.train_rows)
        job.holdout_samples, job.batches_per_epoch = len(plan.held_rows), plan.per_epoch
        job.total_batches = plan.total
        if job.cursor > 0 and self.runs.get(job.run_id) is None:
            raise JobError(
                409,
                f"its run {job.run_id} is no longer in the run book (pruned while the server "
                f"was down, --runs-keep / --runs-keep-hours), so the {job.cursor} batches it "
                "trained would be trained again from batch 0; queue it again to retrain",
                ErrorType.RUN_CONFLICT,
            )
        # Checkpoints hold the base rate while the job sets its schedule's (Checkpointer.save);
        # one saved before that was so may hold a scheduled rate: base again.
        self.checkpointer.base_lr = base
        try:
            await self.worker.run(training.set_lr(base))
            try:  # the job's run is its own while it trains: a client's batch on it is run_busy
                self.runs.hold(job.run_id, job_fingerprint(job))
            except RunBusyError as exc:
                raise JobError(409, str(exc), ErrorType.RUN_BUSY) from None
            except RunConflictError as exc:
                raise JobError(409, str(exc), ErrorType.RUN_CONFLICT) from None
            try:
                await self._train(job, plan, base)
            finally:
                self.runs.release(job.run_id)
        finally:
            self.checkpointer.base_lr = None

    async def _train(self, job: JobRecord, plan: JobPlan, base: float) -> None:
        training = self.training
        self.running = job
        seq = self.runs.next_seqs().get(job.run_id, 0)
        training.cursor(job, plan, seq)
        await self._save()
        self.bus.publish(
            "job_started",
            job_id=job.id,
            run_id=job.run_id,
            dataset=job.spec.dataset,
            total_batches=plan.total,
            resumed_at=seq,
        )
        losses = training.recent_losses(job.run_id, seq)
        try:
            # A kill between an epoch's last checkpoint and its record: score it now.
            done = seq // plan.per_epoch
            unscored = all(entry.epoch != done - 1 for entry in job.epochs_scored)
            if seq and seq % plan.per_epoch == 0 and done <= job.spec.epochs and unscored:
                await training.epoch_end(job, plan, done - 1, [], time.monotonic(), self._save)
            for epoch in range(seq // plan.per_epoch, job.spec.epochs):
                started = time.monotonic()
                first, last = max(seq, epoch * plan.per_epoch), (epoch + 1) * plan.per_epoch
                epoch_losses = await training.train(job, plan, first, last, base, losses)
                await training.epoch_end(job, plan, epoch, epoch_losses, started, self._save)
            await self._finish(job, "finished", "done")
        except EarlyStopError as stop:
            await training.save_checkpoint()
            await self._finish(
                job, "cancelled" if stop.reason == "cancelled" else "finished", stop.reason
            )
        finally:
            await self.worker.run(training.set_lr(base))

    async def _finish(
        self, job: JobRecord, state: JobState, reason: str, error: str | None = None
    ) -> None:
        job.state = state
        job.stop_reason, job.error, job.finished = reason, error, time.time()
        if self.running is job:
            self.running = None
        self.training.cancelling.discard(job.id)
        await self._save()
        self.bus.publish(
            "job_finished",
            job_id=job.id,
            run_id=job.run_id,
            state=state,
            stop_reason=reason,
            samples=job.samples_trained,
            cursor=job.cursor,
            best_epoch=job.best_epoch,
            best_auc=job.best_auc,
        )
        if job.cursor:
            self.training_events.run_closed(job.run_id)
        ended = self._ended.pop(job.id, None)
        if ended is not None:
            ended.set()

    async def _save(self) -> None:
        await asyncio.to_thread(self.book.save)
