"""Training events: the worker's batches, feedback and stalls turned into bus events.

:class:`TrainingEvents` publishes on the :class:`~corteza.server.observe.bus.EventBus`
(``batch_trained``, ``loss_improved``, ``feedback``, ``run_started``, ``stalled``);
:class:`RunEndMiddleware` announces ``run_finished`` when a client closes its stream cleanly.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corteza.server.engine.stats import TrainingStats
from corteza.server.engine.trainer import TrainResult
from corteza.server.observe.bus import EventBus

logger = logging.getLogger(__name__)

RUNS_FOLLOWED = 1024  # runs whose progress is followed for run_finished; the oldest go
STREAM_PATH = "/v1/train/stream"
NORMAL_CLOSURE = 1000


@dataclass
class _RunProgress:
    batches: int = 0
    last_loss: float | None = None


class TrainingEvents:
    """Turns what the worker does into events; also watches for stalls.

    ``loss_improved`` fires when a batch's loss beats the best announced so
    far by ``margin`` (relative), or first drops below ``loss_below``.
    ``stalled`` fires once when no batch has trained for ``stall_seconds``
    after at least one did; the next batch re-arms it.
    """

    def __init__(
        self,
        bus: EventBus,
        *,
        margin: float,
        loss_below: float | None,
        stall_seconds: float,
        best_loss: float | None = None,
    ) -> None:
        self.bus = bus
        self.margin = margin
        self.loss_below = loss_below
        self.stall_seconds = stall_seconds
        self._best = best_loss  # the best loss announced (or the first one seen)
        self._runs: OrderedDict[str, _RunProgress] = OrderedDict()  # least recent first
        self._lock = threading.Lock()
        self._last_batch: float | None = None  # monotonic time of the latest batch
        self._last_step = 0
        self._stall_announced = False
        self._stop = threading.Event()
        self._watch = threading.Thread(target=self._watch_stalls, name="corteza-stall", daemon=True)

    def start(self) -> None:
        self._watch.start()

    def close(self) -> None:
        self._stop.set()
        if self._watch.is_alive():
            self._watch.join()

    def batch_trained(self, result: TrainResult, answer: dict[str, Any]) -> None:
        """Called by the worker after each trained batch, with the answer it sends."""
        step, loss, run_id = result.step, result.loss, answer.get("run_id")
        with self._lock:
            self._last_batch, self._last_step, self._stall_announced = time.monotonic(), step, False
            started = run_id is not None and run_id not in self._runs
            if run_id is not None:
                progress = self._runs.setdefault(run_id, _RunProgress())
                progress.batches += 1
                progress.last_loss = loss
                self._runs.move_to_end(run_id)
                while len(self._runs) > RUNS_FOLLOWED:  # a client that never closes its run
                    self._runs.popitem(last=False)
            previous = self._best
            improved = previous is not None and (
                loss < previous - self.margin * abs(previous)
                or (self.loss_below is not None and loss < self.loss_below <= previous)
            )
            if previous is None or improved:
                self._best = loss
        if started:
            self.bus.publish("run_started", run_id=run_id)
        work, seconds = result.batch_size * result.epochs, result.seconds
        self.bus.publish(
            "batch_trained",
            step=step,
            loss=loss,
            anomaly_probability=float(result.probabilities.mean()),
            samples_per_second=work / seconds if seconds > 0 else 0.0,
            samples=result.batch_size,
            run_id=run_id,
            seconds=seconds,
            **{key: answer.get(key) for key in ("batch_id", "seq", "status", "skipped_steps")},
        )
        if improved:
            self.bus.publish("loss_improved", step=step, loss=loss, previous_best=previous)

    def feedback(
        self,
        batch_id: str | None,
        validated: bool,
        reward: float,
        dendrite_loss: float | None,
        stats: TrainingStats,
    ) -> None:
        """Called by the worker after recording feedback."""
        counts = stats.snapshot()["feedback"]  # read under the statistics' lock
        received, total = counts["recibido"], counts["exitoso"]
        self.bus.publish(
            "feedback",
            batch_id=batch_id,
            validated=validated,
            reward=reward,
            dendrite_loss=dendrite_loss,
            received=received,
            validated_total=total,
            success_rate=total / received if received else 0.0,
        )

    def run_closed(self, run_id: str) -> bool:
        """The client is done with the run: ``run_finished`` if it trained here (True)."""
        with self._lock:
            progress = self._runs.pop(run_id, None)
        if progress is None:
            return False
        self.bus.publish(
            "run_finished", run_id=run_id, batches=progress.batches, last_loss=progress.last_loss
        )
        return True

    def _watch_stalls(self) -> None:
        tick = min(self.stall_seconds / 4, 1.0)
        while not self._stop.wait(tick):
            with self._lock:
                if self._last_batch is None or self._stall_announced:
                    continue
                idle = time.monotonic() - self._last_batch
                if idle < self.stall_seconds:
                    continue
                self._stall_announced = True
                step = self._last_step
            logger.warning("no batch trained for %.0f s (last step %d)", idle, step)
            self.bus.publish("stalled", idle_seconds=round(idle, 3), last_step=step)


class RunEndMiddleware:
    """Finishes a streamed run when its client closes ``WS /v1/train/stream`` with code 1000.

    The run id is read from the server's welcome message (pure ASGI; frames
    pass through untouched). A dropped connection is not an end: the client
    will be back with the same run.
    """

    def __init__(self, app: ASGIApp, path: str = STREAM_PATH) -> None:
        self.app = app
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        run_id: str | None = None
        seen_first = False

        async def watching_send(message: Message) -> None:
            nonlocal run_id, seen_first
            if not seen_first and message["type"] == "websocket.send":
                seen_first = True
                run_id = _welcome_run_id(message.get("text"))
            await send(message)

        async def watching_receive() -> Message:
            message = await receive()
            if (
                message["type"] == "websocket.disconnect"
                and message.get("code") == NORMAL_CLOSURE
                and run_id is not None
            ):
                training_events: TrainingEvents = scope["app"].state.corteza.training_events
                training_events.run_closed(run_id)
            return message

        await self.app(scope, watching_receive, watching_send)


def _welcome_run_id(text: str | None) -> str | None:
    try:
        message = json.loads(text or "")
    except ValueError:
        return None
    if isinstance(message, dict) and message.get("type") == "welcome":
        run_id = message.get("run_id")
        return run_id if isinstance(run_id, str) else None
    return None
