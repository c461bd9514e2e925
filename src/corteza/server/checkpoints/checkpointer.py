"""Checkpoints of the whole training state: when to save, what goes in, resuming.

A checkpoint holds the weights, the optimizer, the statistics and the run
book (``next_seq`` of every run) together, so the weights and the batches
they contain never disagree. Saving runs on the worker's thread, between
batches.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from corteza.server.checkpoints.store import load_checkpoint, load_latest, save_checkpoint
from corteza.server.checkpoints.validate import CheckpointError
from corteza.server.engine.runs import RunBook
from corteza.server.engine.stats import TrainingStats
from corteza.server.engine.trainer import Trainer
from corteza.server.observe.events import EventBus
from corteza.server.settings import Settings

logger = logging.getLogger(__name__)

DurableListener = Callable[[dict[str, int]], None]  # run_id -> last seq a checkpoint holds


class Checkpointer:
    """Saves every N batches or T seconds, on demand and at shutdown; resumes at start."""

    def __init__(
        self,
        settings: Settings,
        trainer: Trainer,
        stats: TrainingStats,
        runs: RunBook,
        events: EventBus | None = None,
    ) -> None:
        self.settings = settings
        self.events = events
        self.trainer = trainer
        self.stats = stats
        self.runs = runs
        self.root: Path | None = settings.checkpoint_dir
        self.last_path: Path | None = None
        self.skipped: list[tuple[Path, str]] = []  # checkpoints refused at start, and why
        self._batches_since = 0
        self._last_time = time.monotonic()
        self._listeners: set[DurableListener] = set()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.root is not None

    def add_listener(self, listener: DurableListener) -> None:
        with self._lock:
            self._listeners.add(listener)

    def remove_listener(self, listener: DurableListener) -> None:
        with self._lock:
            self._listeners.discard(listener)

    def state(self) -> dict[str, Any]:
        return {
            "config": self.trainer.config.to_dict(),
            "step": self.trainer.step,
            "stats": self.stats.to_json(),
            "runs": self.runs.to_json(),
        }

    def batch_done(self) -> Path | None:
        """Called by the worker after each batch: saves when one is due."""
        self._batches_since += 1
        due = self._batches_since >= self.settings.checkpoint_every or (
            time.monotonic() - self._last_time >= self.settings.checkpoint_seconds
        )
        return self.save("interval") if due and self.enabled else None

    def save(self, reason: str = "request") -> Path | None:
        """Write a checkpoint now (on the worker's thread) and tell the listeners.

        ``reason`` (interval, request, shutdown, upload) goes into ``checkpoint_saved``.
        """
        if self.root is None:
            return None
        started = time.perf_counter()
        path = save_checkpoint(
            self.root,
            model=self.trainer.model,
            optimizer=self.trainer.optimizer,
            state=self.state(),
            step=self.trainer.step,
            keep=self.settings.checkpoint_keep,
        )
        self.last_path = path
        self._batches_since = 0
        self._last_time = time.monotonic()
        seconds = time.perf_counter() - started
        logger.info("checkpoint saved: %s (%.2f s)", path, seconds)
        if self.events is not None:
            size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
            self.events.publish(
                "checkpoint_saved",
                step=self.trainer.step,
                name=path.name,
                bytes=size,
                seconds=seconds,
                reason=reason,
            )
        durable = {run: seq - 1 for run, seq in self.runs.next_seqs().items() if seq}
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener(durable)
        return path

    def adopt(self, path: Path) -> dict[str, int]:
        """Continue from an uploaded checkpoint (on the worker's thread).

        Raises :class:`~corteza.server.checkpoints.store.CheckpointError` and changes
        nothing when it does not verify or does not fit this model.
        """
        loaded = load_checkpoint(
            path,
            model=self.trainer.model,
            optimizer=self.trainer.optimizer,
            check_state=check_state,
        )
        self._restore(loaded.state)
        logger.info("continuing from the uploaded checkpoint at step %d", self.trainer.step)
        self.save("upload")
        return self.runs.next_seqs()

    def _restore(self, state: dict[str, Any]) -> None:
        self.trainer.step = int(state.get("step", 0))
        self.stats.load_json(state.get("stats", {}))
        self.runs.load_json(state.get("runs", []))

    def resume(self) -> None:
        """Load the newest checkpoint that verifies; say which were skipped and why."""
        if self.root is None:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        report = load_latest(
            self.root,
            model=self.trainer.model,
            optimizer=self.trainer.optimizer,
            check_state=check_state,
        )
        self.skipped = report.skipped
        if report.loaded is None:
            logger.info("%s in %s: starting fresh", report.describe(), self.root)
            return
        self._restore(report.loaded.state)
        self.last_path = report.loaded.path
        logger.info("%s: %d samples trained so far", report.describe(), self.stats.total_samples)


def check_state(state: dict[str, Any]) -> None:
    """Raise CheckpointError unless ``state`` (what :meth:`Checkpointer.state` wrote) restores
    whole; run before the checkpoint touches the model."""
    try:
        step = state.get("step", 0)
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be a non-negative integer, got {step!r}")
        TrainingStats().load_json(state.get("stats", {}))
        RunBook().load_json(state.get("runs", []))
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"state.json has a malformed state section: {exc!s:.200}") from exc
