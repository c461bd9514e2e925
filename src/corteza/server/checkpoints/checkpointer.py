"""Checkpoints of the whole training state: when to save, what goes in, resuming.

A checkpoint holds the weights, the optimizer, the statistics and the run
book (``next_seq`` of every run) together, so the weights and the batches
they contain never disagree. Saving runs on the worker's thread, between
batches.

A save that fails (a full disk, a vanished Drive) never fails the batch that
triggered it: training goes on, the failure is logged once, published as
``checkpoint_failed`` and kept for ``/status`` (:meth:`Checkpointer.health`),
and the interval saves retry with exponential backoff (``RETRY_FIRST``
seconds, doubling up to ``RETRY_MAX``) instead of after every batch. The
checkpoints already on disk are left as they were.

Statistics are never worth losing training over: a checkpoint whose
statistics are unusable still restores its weights, optimizer and runs; only
the statistics start afresh, with one warning.
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
from corteza.server.engine.precision import check_scaler_state
from corteza.server.engine.runs import RunBook
from corteza.server.engine.stats import TrainingStats
from corteza.server.engine.trainer import Trainer
from corteza.server.observe.bus import EventBus
from corteza.server.settings import Settings

logger = logging.getLogger(__name__)

DurableListener = Callable[[dict[str, int]], None]  # run_id -> last seq a checkpoint holds
RETRY_FIRST = 5.0  # seconds from a failed interval save to the next attempt
RETRY_MAX = 600.0  # the wait doubles per failure up to this
PIN_SECONDS = 600.0  # a checkpoint being downloaded is not pruned for this long after a request


class CheckpointSaveError(RuntimeError):
    """A save asked for now failed; the failure is recorded and published as well."""


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
        self.retry_first = RETRY_FIRST
        self.retry_max = RETRY_MAX
        self.failures = 0  # consecutive failed saves
        self.failures_total = 0
        self.last_error: str | None = None
        self.last_error_at: float | None = None  # unix seconds
        self.last_saved_at: float | None = None  # unix seconds
        self._retry_at = 0.0  # monotonic: interval saves wait until then after a failure
        self._pins: dict[str, float] = {}  # checkpoint name -> monotonic expiry
        self._doomed: set[str] = set()  # names pruning has claimed (each save adds one)
        # Set by a job while it trains: its batches run at its schedule's rates, checkpoints
        # hold this one, so a resume never starts from a scheduled rate.
        self.base_lr: float | None = None

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
            "scaler": self.trainer.mixed.state_dict(),  # fp16's loss scale; {} otherwise
        }

    def batch_done(self) -> Path | None:
        """Called by the worker after each batch: saves when one is due; never raises."""
        self._batches_since += 1
        now = time.monotonic()
        due = self._batches_since >= self.settings.checkpoint_every or (
            now - self._last_time >= self.settings.checkpoint_seconds
        )
        if not (due and self.enabled) or now < self._retry_at:
            return None
        return self.try_save("interval")

    def try_save(self, reason: str) -> Path | None:
        """:meth:`save`, with a failure recorded and published but not raised (None)."""
        try:
            return self.save(reason)
        except CheckpointSaveError:
            return None

    def health(self) -> dict[str, Any]:
        """The ``checkpoints`` block of ``/status``: where, the last save, the failures."""
        return {
            "enabled": self.enabled,
            "last": None if self.last_path is None else self.last_path.name,
            "last_saved_at": self.last_saved_at,
            "consecutive_failures": self.failures,
            "failures_total": self.failures_total,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
        }

    def pin(self, name: str, seconds: float = PIN_SECONDS) -> bool:
        """Spare checkpoint ``name`` from pruning for ``seconds`` from now; False when a
        prune has already claimed it (it is gone, or about to be).

        A download takes one request per file; each pins its checkpoint again.
        """
        with self._lock:
            if name in self._doomed:
                return False
            self._pins[name] = time.monotonic() + seconds
            return True

    def _protect(self, path: Path) -> bool:
        """Asked by pruning before it removes ``path``: keep it while a download pins it.

        Either the pin or the prune comes first, under one lock: a pin that comes
        second is refused, so a download never names a checkpoint being removed.
        """
        now = time.monotonic()
        with self._lock:
            self._pins = {name: until for name, until in self._pins.items() if until > now}
            if path.name in self._pins:
                return True
            self._doomed.add(path.name)
            return False

    def save(self, reason: str = "request") -> Path | None:
        """Write a checkpoint now (on the worker's thread) and tell the listeners.

        ``reason`` (interval, request, shutdown, upload) goes into ``checkpoint_saved``.
        A failure is recorded, published as ``checkpoint_failed`` and raised as
        :class:`CheckpointSaveError`; the checkpoints on disk stay as they were.
        """
        if self.root is None:
            return None
        started = time.perf_counter()
        groups = self.trainer.optimizer.param_groups
        rates = [group["lr"] for group in groups]
        base = self.base_lr
        try:
            if base is not None:  # a job's scheduled rate is not the server's
                for group in groups:
                    group["lr"] = base
            path = save_checkpoint(
                self.root,
                model=self.trainer.model,
                optimizer=self.trainer.optimizer,
                state=self.state(),
                step=self.trainer.step,
                keep=self.settings.checkpoint_keep,
                protect=self._protect,
            )
        except Exception as exc:
            message = self._failed(exc, reason)
            raise CheckpointSaveError(message) from exc
        finally:
            for group, rate in zip(groups, rates, strict=True):
                group["lr"] = rate
        self.last_path = path
        with self._lock:  # removed now: a pin on them finds no folder
            self._doomed = {name for name in self._doomed if (self.root / name).exists()}
        self._batches_since = 0
        self._last_time = time.monotonic()
        self.last_saved_at = time.time()
        if self.failures:
            logger.warning("checkpoint saved again after %d failed attempt(s)", self.failures)
        self.failures = 0
        self._retry_at = 0.0
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

    def _failed(self, exc: Exception, reason: str) -> str:
        """Record, log once and publish a failed save; returns the message."""
        self.failures += 1
        self.failures_total += 1
        self.last_error = f"{type(exc).__name__}: {exc!s:.300}"
        self.last_error_at = time.time()
        wait = min(self.retry_max, self.retry_first * 2 ** min(self.failures - 1, 30))
        self._retry_at = time.monotonic() + wait
        message = f"Saving a checkpoint failed: {self.last_error}"
        logger.warning(
            "%s (%d in a row; training goes on, next interval save in %.0f s)",
            message,
            self.failures,
            wait,
            exc_info=not isinstance(exc, OSError),  # a full disk needs no traceback
        )
        if self.events is not None:
            self.events.publish(
                "checkpoint_failed",
                step=self.trainer.step,
                reason=reason,
                error=self.last_error,
                consecutive_failures=self.failures,
                retry_in_seconds=wait,
                last_good=None if self.last_path is None else self.last_path.name,
            )
        return message

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
        self._restore(loaded.state, path)
        self.trainer.state_replaced()  # torch.distributed: every rank takes it
        logger.info("continuing from the uploaded checkpoint at step %d", self.trainer.step)
        self.try_save("upload")
        return self.runs.next_seqs()

    def _restore(self, state: dict[str, Any], path: Path) -> None:
        self.trainer.step = int(state.get("step", 0))
        self.runs.load_json(state.get("runs", []))
        self.trainer.mixed.load_state_dict(state.get("scaler", {}))
        try:
            self.stats.load_json(state.get("stats", {}))
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            self.stats.reset()
            logger.warning(
                "checkpoint %s: its statistics are unusable (%s); weights, optimizer and "
                "runs restored, statistics start afresh",
                path.name,
                f"{exc!s:.200}",
            )

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
        self._restore(report.loaded.state, report.loaded.path)
        self.last_path = report.loaded.path
        logger.info("%s: %d samples trained so far", report.describe(), self.stats.total_samples)


def check_state(state: dict[str, Any]) -> None:
    """Raise CheckpointError unless ``state`` (what :meth:`Checkpointer.state` wrote) restores
    the step and the runs; run before the checkpoint touches the model. The statistics are
    not checked here: unusable ones are reset on restore, the checkpoint still loads."""
    try:
        step = state.get("step", 0)
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be a non-negative integer, got {step!r}")
        RunBook().load_json(state.get("runs", []))
        check_scaler_state(state.get("scaler", {}))
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"state.json has a malformed state section: {exc!s:.200}") from exc
