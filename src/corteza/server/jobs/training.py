"""One job's training: its batches through the worker, its epochs' ends, its stops.

Batches go to the training worker as the run ``job-<id>``, ``WINDOW`` in flight,
through the same exactly-once path as a client's (``(run_id, seq)`` in the run
book), so batches that clients send meanwhile join the worker's queue between
the job's. After each epoch the holdout is scored, a checkpoint saved (it
holds the run book: the job's cursor) and the best one kept apart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from corteza.server.checkpoints.checkpointer import Checkpointer
from corteza.server.engine.runs import RunBook
from corteza.server.engine.worker import TrainingWorker
from corteza.server.jobs.plan import JobPlan
from corteza.server.jobs.schedule import learning_rate
from corteza.server.jobs.scoring import BEST_FOLDER, keep_best, score_holdout, tree_bytes
from corteza.server.observe.bus import EventBus
from corteza.wire.jobs import KEEP_EPOCHS, EpochScore, JobRecord, samples_before
from corteza.wire.validation import Batch

logger = logging.getLogger(__name__)

WINDOW = 2  # job batches in the worker's queue at once: the next is ready when one ends
UNTIL_WINDOW = 5  # batches averaged for until_loss, as corteza train does


class EarlyStopError(Exception):
    """The job ends early: ``reason`` is until_loss, cancelled or patience."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def job_fingerprint(job: JobRecord) -> str:
    """The fingerprint of a job's run: its id and dataset."""
    return f"{job.run_id}:{job.spec.dataset[:32]}"


class JobTraining:
    """Trains jobs' batches and ends their epochs; ``cancelling`` holds the ids to stop."""

    def __init__(
        self, worker: TrainingWorker, runs: RunBook, checkpointer: Checkpointer, bus: EventBus
    ) -> None:
        self.worker = worker
        self.runs = runs
        self.checkpointer = checkpointer
        self.bus = bus
        self.cancelling: set[str] = set()

    def current_lr(self) -> float:
        return float(self.checkpointer.trainer.optimizer.param_groups[0]["lr"])

    async def save_checkpoint(self) -> Path | None:
        return await self.worker.run(lambda: self.checkpointer.try_save("job"))

    async def train(
        self, job: JobRecord, plan: JobPlan, first: int, last: int, base: float, losses: list[float]
    ) -> list[float]:
        """Batches ``first .. last - 1`` of the job, ``WINDOW`` in flight; their losses.

        Raises :class:`EarlyStopError` after the batches in flight when the job is cancelled or
        ``until_loss`` is met.
        """
        spec = job.spec
        in_flight: deque[tuple[int, float, asyncio.Future[dict[str, Any]]]] = deque()
        epoch_losses: list[float] = []
        reference: float | None = None  # the loss of the last feedback sent
        stop: str | None = None
        seq = first
        try:
            while (seq < last and stop is None) or in_flight:
                while seq < last and len(in_flight) < WINDOW and stop is None:
                    if job.id in self.cancelling:
                        stop = "cancelled"
                        break
                    batch = await asyncio.to_thread(plan.batch, seq)
                    lr = learning_rate(seq, plan.total, base, spec.lr_schedule, warmup=spec.warmup)
                    in_flight.append((seq, lr, self._submit(batch, job, seq, lr, base)))
                    seq += 1
                if not in_flight:
                    break
                done, lr, future = in_flight.popleft()
                answer = await future
                self.cursor(job, plan, done + 1)
                if not isinstance(answer.get("loss"), (int, float)):  # a replay without one
                    continue
                loss = float(answer["loss"])
                losses.append(loss)
                epoch_losses.append(loss)
                job.last_loss, job.lr = loss, lr
                job.last_anomaly_prob = answer.get("outputs", {}).get("anomaly_prob")
                if done == 0:
                    job.first_loss = loss
                if spec.feedback_every and (done + 1) % spec.feedback_every == 0:
                    validated = reference is None or loss < reference
                    await self._feedback(answer, validated)
                    reference = loss
                if spec.until_loss is not None and _window_mean(losses) <= spec.until_loss:
                    job.reached_target, stop = True, "until_loss"
                if job.id in self.cancelling:
                    stop = "cancelled"
        except BaseException:
            for _, _, future in in_flight:  # trained or refused on the worker; not ours to wait
                future.add_done_callback(lambda f: f.cancelled() or f.exception())
            raise
        if stop is not None:
            raise EarlyStopError(stop)
        return epoch_losses

    def _submit(
        self, batch: Batch, job: JobRecord, seq: int, lr: float, base: float
    ) -> asyncio.Future[dict[str, Any]]:
        """Queue one batch of the job at rate ``lr``; the rate is ``base`` again right after.

        Tasks start in the order they are made, and each one's first step queues its
        work on the worker, so the three land in the worker's FIFO side by side: a
        client's batch never trains at the job's rate.
        """
        train = self.worker.train(batch, job.run_id, seq, job_fingerprint(job), held=True)
        if lr == base:
            return asyncio.ensure_future(train)
        rate, back = self.worker.run(self.set_lr(lr)), self.worker.run(self.set_lr(base))
        return asyncio.ensure_future(_trained(asyncio.gather(rate, train, back)))

    def _save_and_keep(self, job: JobRecord, improved: bool) -> tuple[Path | None, Path | None]:
        """On the worker's thread: save a checkpoint and, when ``improved``, link it as the
        job's best before any batch can come between (an interval save would prune it)."""
        checkpoint = self.checkpointer.try_save("job")
        root = self.checkpointer.root
        if not improved or checkpoint is None or root is None:
            return checkpoint, None
        return checkpoint, keep_best(root, job.id, checkpoint)

    def set_lr(self, lr: float) -> Callable[[], None]:
        def apply() -> None:  # on the worker's thread, between batches
            for group in self.checkpointer.trainer.optimizer.param_groups:
                group["lr"] = lr

        return apply

    async def _feedback(self, answer: dict[str, Any], validated: bool) -> None:
        """The dendrite head's proposals back, as ``corteza train`` sends them."""
        adjustments = answer.get("outputs", {}).get("dendrite_adjustments")
        if not adjustments:
            return
        try:
            await self.worker.give_feedback(answer.get("batch_id"), adjustments, validated, 1.0)
        except (LookupError, ValueError) as exc:  # a batch forgotten meanwhile: skip this one
            logger.info("job feedback skipped: %s", exc)

    def recent_losses(self, run_id: str, seq: int) -> list[float]:
        """The losses of the run's last batches (the until_loss window survives a restart)."""
        run = self.runs.get(run_id)
        if run is None:
            return []
        found = [run.answers.get(s, {}).get("loss") for s in range(max(0, seq - UNTIL_WINDOW), seq)]
        return [float(loss) for loss in found if isinstance(loss, (int, float))]

    def cursor(self, job: JobRecord, plan: JobPlan, seq: int) -> None:
        job.cursor = seq
        job.epoch = seq // plan.per_epoch if plan.per_epoch else 0
        job.samples_trained = samples_before(seq, len(plan.train_rows), job.spec.batch_size)

    async def epoch_end(
        self,
        job: JobRecord,
        plan: JobPlan,
        epoch: int,
        losses: list[float],
        started: float,
        save: Callable[[], Awaitable[None]],
    ) -> None:
        """Score the holdout, save a checkpoint, keep the best, record; :class:`EarlyStopError` for
        patience."""
        score = None
        if len(plan.held_rows):
            score = await score_holdout(
                self.worker, plan.dataset.inputs, plan.dataset.labels, plan.held_rows
            )
        seconds = time.monotonic() - started  # training and scoring; the save comes after
        auc = None if score is None else score.auc
        improved = auc is not None and (job.best_auc is None or auc > job.best_auc)
        checkpoint, best = await self.worker.run(lambda: self._save_and_keep(job, improved))
        if improved:
            job.best_epoch, job.best_auc = epoch, auc
            if best is not None:
                job.best_checkpoint = str(Path(BEST_FOLDER) / best.parent.name / best.name)
                job.best_bytes = await asyncio.to_thread(tree_bytes, best)
        entry = EpochScore(
            epoch=epoch,
            train_loss=sum(losses) / len(losses) if losses else None,
            holdout_auc=auc,
            holdout_loss=None if score is None else score.loss,
            improved=improved,
            checkpoint=None if checkpoint is None else checkpoint.name,
            seconds=seconds,
        )
        scored = [e for e in job.epochs_scored if e.epoch != epoch] + [entry]
        job.epochs_scored, dropped = trim_epochs(scored, job.best_epoch, KEEP_EPOCHS)
        job.epochs_dropped += dropped
        await save()
        self.bus.publish(
            "job_epoch",
            job_id=job.id,
            run_id=job.run_id,
            epoch=epoch,
            epochs=job.spec.epochs,
            cursor=job.cursor,
            train_loss=entry.train_loss,
            holdout_auc=auc,
            holdout_loss=entry.holdout_loss,
            best_epoch=job.best_epoch,
            improved=improved,
        )
        patience = job.spec.patience
        waited = None if job.best_epoch is None else epoch - job.best_epoch
        last = epoch == job.spec.epochs - 1
        if patience is not None and waited is not None and waited >= patience and not last:
            raise EarlyStopError("patience")


def trim_epochs(
    scored: list[EpochScore], best: int | None, keep: int
) -> tuple[list[EpochScore], int]:
    """The last ``keep`` epoch scores and the best one (in epoch order); how many went."""
    last = {e.epoch for e in scored[-keep:]} if keep else set()
    kept = [e for e in scored if e.epoch in last or e.epoch == best]
    return kept, len(scored) - len(kept)


async def _trained(together: asyncio.Future[list[Any]]) -> dict[str, Any]:
    """The batch's answer out of (set the rate, train, restore the rate)."""
    answer: dict[str, Any] = (await together)[1]
    return answer


def _window_mean(losses: list[float]) -> float:
    """Mean of the last UNTIL_WINDOW losses; inf until there are that many."""
    if len(losses) < UNTIL_WINDOW:
        return float("inf")
    return sum(losses[-UNTIL_WINDOW:]) / UNTIL_WINDOW
