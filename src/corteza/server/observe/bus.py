"""The event bus: what happened, numbered, replayable, fanned out without ever blocking.

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
- ``job_queued`` {job_id, run_id, dataset}; ``job_started`` {job_id, run_id, dataset,
  total_batches, resumed_at}: a job began, or resumed at batch ``resumed_at``
- ``job_epoch`` {job_id, run_id, epoch, epochs, cursor, train_loss, holdout_auc,
  holdout_loss, best_epoch, improved}: an epoch of a job ended and its holdout was scored
- ``job_finished`` {job_id, run_id, state, stop_reason, samples, cursor, best_epoch,
  best_auc}: finished, cancelled or failed

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
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

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
    "job_queued",
    "job_started",
    "job_epoch",
    "job_finished",
)
DEFAULT_CAPACITY = 1000  # events kept for replay
SUBSCRIBER_LIMIT = 500  # events a subscriber may fall behind before it is dropped
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
