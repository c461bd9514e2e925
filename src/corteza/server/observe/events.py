"""Server events: what happened, numbered, replayable, fanned out without ever blocking.

The training worker's thread publishes; the SSE route, the webhooks and the
Prometheus histograms listen. Types and their fields:

- ``batch_trained`` {step, loss, anomaly_probability, samples_per_second, samples,
  batch_id, run_id, seq, seconds}: ``samples`` in this batch, ``seconds`` of training
- ``feedback`` {batch_id, validated, reward, dendrite_loss, received, validated_total,
  success_rate}
- ``checkpoint_saved`` {step, name, bytes, seconds, reason}
- ``checkpoint_failed`` {step, reason, error, consecutive_failures, retry_in_seconds,
  last_good}: a save failed (training goes on; ``last_good`` is the newest checkpoint)
- ``run_started`` {run_id}: the first batch of a run trained by this process
- ``run_finished`` {run_id, batches, last_loss}: the client closed the run's stream
  cleanly (close code 1000), or ``POST /v1/runs/{run_id}/finish`` for a run sent by REST
- ``stalled`` {idle_seconds, last_step}: no batch for ``stall_minutes``, once per lull
- ``loss_improved`` {step, loss, previous_best}

Ids grow by one per event from the microseconds since the epoch at which
the bus was made, so a restarted server numbers on past its previous process
and a client's ``Last-Event-ID`` from before the restart replays everything new.

>>> bus = EventBus(first_id=1)
>>> bus.publish("run_started", run_id="r1").to_json()["id"]
1
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corteza.server.engine.stats import TrainingStats
from corteza.server.engine.trainer import TrainResult

logger = logging.getLogger(__name__)

EVENT_TYPES = (
    "batch_trained",
    "feedback",
    "checkpoint_saved",
    "checkpoint_failed",
    "run_started",
    "run_finished",
    "stalled",
    "loss_improved",
)
DEFAULT_CAPACITY = 1000  # events kept for replay
SUBSCRIBER_LIMIT = 500  # events a subscriber may fall behind before it is dropped
RUNS_FOLLOWED = 1024  # runs whose progress is followed for run_finished; the oldest go
STREAM_PATH = "/v1/train/stream"
NORMAL_CLOSURE = 1000

Listener = Callable[["Event"], None]


@dataclass(frozen=True)
class Event:
    """One thing that happened; ``id`` grows by one per event, across server restarts too."""

    id: int
    type: str
    time: float  # unix seconds
    data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "time": self.time, **self.data}


class _Subscription:
    """Events waiting for one subscriber; filled from any thread, drained on its loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int) -> None:
        self.loop = loop
        self.limit = limit
        self.pending: deque[Event] = deque()
        self.wake = asyncio.Event()
        self.ended = False  # dropped, or the bus closed

    def offer(self, event: Event | None) -> bool:
        """Queue ``event`` (None ends the subscription); False when the subscriber fell behind."""
        if self.ended:
            return True
        kept = True
        if event is None:
            self.ended = True
        elif len(self.pending) >= self.limit:
            self.ended, kept = True, False
            self.pending.clear()
        else:
            self.pending.append(event)
        with contextlib.suppress(RuntimeError):  # its loop is closed: nobody is listening
            self.loop.call_soon_threadsafe(self.wake.set)
        return kept

    async def follow(self) -> AsyncIterator[Event]:
        while True:
            while self.pending:
                yield self.pending.popleft()
            if self.ended:
                return
            self.wake.clear()
            if not self.pending and not self.ended:
                await self.wake.wait()


class EventBus:
    """Numbers events, keeps the last ``capacity`` for replay and hands them to subscribers.

    :meth:`publish` never blocks: a subscriber more than ``subscriber_limit``
    events behind is dropped (its stream ends; it reconnects with
    ``Last-Event-ID`` and replays from the buffer). Listeners are called
    synchronously on the publishing thread and must be quick.
    """

    def __init__(
        self,
        capacity: int = DEFAULT_CAPACITY,
        subscriber_limit: int = SUBSCRIBER_LIMIT,
        *,
        first_id: int | None = None,
    ) -> None:
        self.subscriber_limit = subscriber_limit
        self.dropped = 0  # subscribers dropped for falling behind
        self._lock = threading.Lock()
        self._buffer: deque[Event] = deque(maxlen=capacity)
        # Below 2**53 until the year 2255, so JavaScript's numbers hold it exactly.
        self._next_id = time.time_ns() // 1000 if first_id is None else first_id
        self._subscriptions: set[_Subscription] = set()
        self._listeners: list[Listener] = []
        self._closed = False

    @property
    def last_id(self) -> int:
        """The id of the newest event (the first id less one before any)."""
        return self._next_id - 1

    @property
    def subscribers(self) -> int:
        """Subscriptions following live events now."""
        with self._lock:
            return len(self._subscriptions)

    def recent(self) -> list[Event]:
        """The events still buffered, oldest first."""
        with self._lock:
            return list(self._buffer)

    def add_listener(self, listener: Listener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def publish(self, type: str, **data: Any) -> Event:
        """Number and record an event, wake the subscribers, call the listeners."""
        with self._lock:
            event = Event(self._next_id, type, time.time(), data)
            self._next_id += 1
            self._buffer.append(event)
            behind = [s for s in self._subscriptions if not s.offer(event)]
            for subscription in behind:
                self._subscriptions.discard(subscription)
            self.dropped += len(behind)
            listeners = list(self._listeners)
        for _ in behind:
            logger.warning(
                "dropped an event subscriber %d events behind; it can resume with Last-Event-ID",
                self.subscriber_limit,
            )
        for listener in listeners:
            try:
                listener(event)
            except Exception:
                logger.exception("event listener failed on %s %d", event.type, event.id)
        return event

    async def subscribe(self, last_event_id: int | None = None) -> AsyncIterator[Event]:
        """Buffered events after ``last_event_id`` (all of them for None), then live ones.

        An id from an earlier server process is below this bus's ids, so
        everything buffered is replayed; so is one beyond the newest event
        (another process, or a clock set back). The iterator ends
        when the subscriber falls behind or the bus closes.
        """
        subscription = _Subscription(asyncio.get_running_loop(), self.subscriber_limit)
        with self._lock:
            after = last_event_id or 0
            if after > self.last_id:
                after = 0
            replay = [event for event in self._buffer if event.id > after]
            if self._closed:
                subscription.ended = True
            else:
                self._subscriptions.add(subscription)
        try:
            for event in replay:
                yield event
            async for event in subscription.follow():
                yield event
        finally:
            with self._lock:
                self._subscriptions.discard(subscription)

    def close(self) -> None:
        """End every subscription; later ones get the replay only."""
        with self._lock:
            self._closed = True
            for subscription in self._subscriptions:
                subscription.offer(None)
            self._subscriptions.clear()


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
