"""The training worker: one thread owns the model; handlers hand it work and await.

Request handlers never compute on the event loop. They submit a job here and
``await`` its result, so ``/health`` and ``/status`` answer in milliseconds
while a batch trains.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from corteza.server.checkpoints.checkpointer import Checkpointer
from corteza.server.engine.answers import train_answer
from corteza.server.engine.feedback import DendriteFeedback, FeedbackStep, check_adjustments
from corteza.server.engine.runs import RunBook
from corteza.server.engine.stats import TrainingStats
from corteza.server.engine.trainer import (
    Diagnosis,
    Predictions,
    Trainer,
    TrainingDivergedError,
    TrainResult,
)
from corteza.server.observe.events import TrainingEvents
from corteza.wire import Batch

logger = logging.getLogger(__name__)

T = TypeVar("T")


class TrainingWorker:
    """Runs every job that touches the model on one dedicated thread, in order."""

    def __init__(
        self,
        trainer: Trainer,
        stats: TrainingStats,
        runs: RunBook,
        checkpointer: Checkpointer,
        feedback: DendriteFeedback,
        events: TrainingEvents | None = None,
    ) -> None:
        self.trainer = trainer
        self.events = events
        self.feedback = feedback
        self.stats = stats
        self.runs = runs
        self.checkpointer = checkpointer
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="corteza-trainer")
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._queued: deque[Batch] = deque()  # batches submitted, not yet started
        trainer.upcoming = self._upcoming

    @property
    def queue_depth(self) -> int:
        """Jobs submitted and not finished (the one running included)."""
        return self._pending

    def _submit(self, job: Callable[[], T]) -> asyncio.Future[T]:
        with self._pending_lock:
            self._pending += 1
        # Counted down when the job ends, even if the awaiting request went away.
        future = self._executor.submit(job)
        future.add_done_callback(self._done)
        return asyncio.wrap_future(future)

    async def run(self, job: Callable[[], T]) -> T:
        """Run ``job`` on the worker thread and await its result."""
        return await self._submit(job)

    def _done(self, _: object) -> None:
        with self._pending_lock:
            self._pending -= 1

    def submit_train(
        self,
        batch: Batch,
        run_id: str | None = None,
        seq: int | None = None,
        fingerprint: str | None = None,
        *,
        held: bool = False,
    ) -> asyncio.Future[dict[str, Any]]:
        """Queue a batch; the future gives its answer (a replay when already applied).

        With a ``run_id``, the exactly-once decision, the training and the
        record happen in one job on the worker's thread, so nothing can slip
        between them. Raises :class:`OutOfOrderError`, :class:`RunConflictError`
        (another ``fingerprint`` on the run, or none on a run that has one) or
        :class:`RunBusyError` (a live connection holds the run, and ``held`` does
        not say it is this caller) through the future.
        """

        def job() -> dict[str, Any]:
            self._started(batch)
            if run_id is not None and seq is not None:
                stored = self.runs.decide(run_id, seq, fingerprint, held=held)
                if stored is not None:
                    return {**stored, "replayed": True}
            try:
                result = self.trainer.train_batch(batch)
            except TrainingDivergedError as exc:
                if exc.partial is not None:  # epochs before the divergence are in the weights
                    self._record(
                        batch,
                        exc.partial,
                        run_id,
                        seq,
                        diverged=len(exc.partial.losses) + 1,
                        fingerprint=fingerprint,
                    )
                raise
            return self._record(batch, result, run_id, seq, fingerprint=fingerprint)

        self._queued.append(batch)
        return self._submit(job)

    def _started(self, batch: Batch) -> None:
        """Take ``batch`` (and any job before it that never ran) off the queue."""
        while self._queued and self._queued[0] is not batch:
            self._queued.popleft()
        if self._queued:
            self._queued.popleft()

    def _upcoming(self) -> Batch | None:
        """The batch queued next, which the trainer copies to the GPU meanwhile."""
        return self._queued[0] if self._queued else None

    def _record(
        self,
        batch: Batch,
        result: TrainResult,
        run_id: str | None,
        seq: int | None,
        diverged: int | None = None,
        fingerprint: str | None = None,
    ) -> dict[str, Any]:
        """Count a trained batch, record ``(run_id, seq)``, tell the listeners; its answer.

        ``diverged`` is the epoch that was refused when only the ones before it trained.
        """
        self.stats.record_batch(result)
        answer = train_answer(result, run_id, seq, self.feedback.remember(batch.inputs))
        if diverged is not None:
            answer["diverged_at_epoch"] = diverged
        if run_id is not None and seq is not None:
            self.runs.record(run_id, seq, answer, fingerprint)
        if self.events is not None:
            self.events.batch_trained(result, answer)
        self.checkpointer.batch_done()
        return answer

    async def train(
        self,
        batch: Batch,
        run_id: str | None = None,
        seq: int | None = None,
        fingerprint: str | None = None,
        *,
        held: bool = False,
    ) -> dict[str, Any]:
        return await self.submit_train(batch, run_id, seq, fingerprint, held=held)

    async def give_feedback(
        self, batch_id: str | None, target: list[float], validated: bool, reward: float
    ) -> tuple[str | None, FeedbackStep | None]:
        """Record feedback; a validated one also takes a step on the dendrite head.

        Raises :class:`UnknownBatchError` (nothing recorded) for an unknown batch
        and :class:`InvalidFeedbackError` (nothing recorded) for adjustments that
        are not finite or lie beyond the bound. Before any batch, feedback without a
        ``batch_id`` is recorded only, as the seed's server did.
        """
        check_adjustments(target)  # validated or not: counted feedback is well-formed

        def job() -> tuple[str | None, FeedbackStep | None]:
            resolved = self.feedback.resolve(batch_id)
            outcome = None
            if validated and resolved is not None:
                outcome = self.feedback.step(resolved, target, reward)
            loss = None if outcome is None else outcome.loss
            self.stats.record_feedback(validated, loss)
            if self.events is not None:
                self.events.feedback(resolved, validated, reward, loss, self.stats)
            return resolved, outcome

        return await self.run(job)

    async def checkpoint(self) -> Path | None:
        """Save a checkpoint after the batches already queued.

        Raises :class:`CheckpointSaveError` when the save fails (recorded and published too).
        """
        return await self.run(self.checkpointer.save)

    async def predict(self, inputs: NDArray[np.float32]) -> Predictions:
        return await self.run(lambda: self.trainer.predict(inputs))

    async def diagnose(self) -> Diagnosis:
        return await self.run(self.trainer.diagnose)

    def shutdown(self) -> None:
        """Finish the jobs queued, save a checkpoint, stop the thread."""
        if self.checkpointer.enabled:
            self._executor.submit(self.checkpointer.try_save, "shutdown")
        self._executor.shutdown(wait=True)
