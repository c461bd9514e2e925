"""Webhooks: news of the training POSTed to URLs fixed at start, signed, retried, never blocking.

Events sent: ``loss_improved``, ``checkpoint_saved``, ``checkpoint_failed``, ``run_finished``,
``stalled``, ``job_epoch``, ``job_finished``.
The JSON format's body is ``{"id", "type", "timestamp", "data"}`` (``id`` a
uuid, ``timestamp`` the event's time in ISO 8601); the Slack format's is
``{"text": "corteza: new best loss 0.1234 at step 500 (was 0.1301)"}``. Every
request carries ``X-Corteza-Event``, ``X-Corteza-Delivery`` (the id, the same
on every attempt), ``X-Corteza-Timestamp`` (unix seconds of this attempt) and,
with a secret, ``X-Corteza-Signature`` (see :mod:`corteza.wire.webhooks`: each
attempt is signed afresh; the body never changes).

One thread delivers, from a bounded queue (the oldest delivery is dropped,
with a warning, when it is full). Connection errors, timeouts, 5xx and 429
are retried after 0.5, 1, 2 and 4 s; other answers are final. At shutdown
the queue is drained for at most ``drain_seconds``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal

from corteza._version import __version__
from corteza.server.observe.bus import Event
from corteza.wire.webhooks import sign

if TYPE_CHECKING:
    import httpx  # imported by the delivery thread: the server's import stays free of httpx

logger = logging.getLogger(__name__)

WEBHOOK_EVENTS = frozenset(
    {
        "loss_improved",
        "checkpoint_saved",
        "checkpoint_failed",
        "run_finished",
        "stalled",
        "job_epoch",
        "job_finished",
    }
)
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0)  # seconds before each retry
QUEUE_LIMIT = 1000  # deliveries waiting, retries included
REQUEST_TIMEOUT = 5.0  # seconds per attempt
DRAIN_SECONDS = 5.0  # longest wait for the queue at shutdown

THREAD_NAME = "corteza-webhooks"

WebhookFormat = Literal["json", "slack"]


class _HideWebhookRequests(logging.Filter):
    """httpx logs every request's full URL; a webhook URL may hold a secret (Slack's do)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.threadName != THREAD_NAME


_HIDE_WEBHOOK_REQUESTS = _HideWebhookRequests()


@dataclass
class Delivery:
    """One event for one URL; ``attempts`` made so far, not before ``due`` (monotonic)."""

    url: str
    delivery_id: str
    type: str
    body: bytes
    attempts: int = 0
    due: float = 0.0


def slack_text(event: Event) -> str:
    """A human line for chat."""
    d = event.data
    if event.type == "loss_improved":
        was = "" if d["previous_best"] is None else f" (was {d['previous_best']:.4f})"
        return f"corteza: new best loss {d['loss']:.4f} at step {d['step']}{was}"
    if event.type == "checkpoint_saved":
        return (
            f"corteza: checkpoint {d['name']} saved at step {d['step']} "
            f"({d['bytes'] / 1e6:.1f} MB in {d['seconds']:.1f} s, {d['reason']})"
        )
    if event.type == "checkpoint_failed":
        return (
            f"corteza: checkpoint failed at step {d['step']} ({d['consecutive_failures']} in a "
            f"row; training goes on, nothing newer is durable): {d['error']}"
        )
    if event.type == "run_finished":
        last = "" if d["last_loss"] is None else f", last loss {d['last_loss']:.4f}"
        return f"corteza: run {d['run_id']} finished after {d['batches']} batches{last}"
    if event.type == "stalled":
        return (
            f"corteza: no batch trained for {d['idle_seconds'] / 60:.1f} min "
            f"(last step {d['last_step']})"
        )
    if event.type in ("job_epoch", "job_finished"):
        return job_text(event.type, d)
    return f"corteza: {event.type}"


def job_text(kind: str, d: dict[str, Any]) -> str:
    """A job's epoch or end in one line."""
    if kind == "job_epoch":
        auc = "" if d["holdout_auc"] is None else f", holdout ROC-AUC {d['holdout_auc']:.4f}"
        best = " (best so far)" if d["improved"] else ""
        return f"corteza: job {d['job_id']} epoch {d['epoch'] + 1}/{d['epochs']} done{auc}{best}"
    best = "" if d["best_auc"] is None else f", best holdout ROC-AUC {d['best_auc']:.4f}"
    return (
        f"corteza: job {d['job_id']} {d['state']} ({d['stop_reason']}) after "
        f"{d['samples']} samples{best}"
    )


def render(event: Event, delivery_id: str, fmt: WebhookFormat) -> bytes:
    """The request body of ``event`` in ``fmt``."""
    payload: dict[str, Any]
    if fmt == "slack":
        payload = {"text": slack_text(event)}
    else:
        when = datetime.fromtimestamp(event.time, timezone.utc).isoformat()
        payload = {"id": delivery_id, "type": event.type, "timestamp": when, "data": event.data}
    return json.dumps(payload, separators=(",", ":")).encode()


def _site(url: str) -> str:
    """``https://hooks.slack.com`` of a URL whose path may hold a secret."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0].rsplit('@', 1)[-1]}"


class WebhookSender:
    """Queues the events worth a webhook and delivers them on its own thread.

    Register :meth:`on_event` as an :class:`~corteza.server.observe.bus.EventBus`
    listener; it only appends to a queue.
    """

    def __init__(
        self,
        urls: list[str],
        *,
        secret: str | None = None,
        fmt: WebhookFormat = "json",
        retry_delays: tuple[float, ...] = RETRY_DELAYS,
        limit: int = QUEUE_LIMIT,
        timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self.urls = list(urls)
        self.secret = secret
        self.fmt = fmt
        self.retry_delays = retry_delays
        self.limit = limit
        self.timeout = timeout
        self.delivered = 0
        self.failed = 0  # given up: retries spent, or a final refusal
        self.dropped = 0  # pushed out of a full queue
        self._queue: deque[Delivery] = deque()
        self._cond = threading.Condition()
        self._deadline: float | None = None  # set by close(): drain until then
        self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)

    def start(self) -> None:
        logging.getLogger("httpx").addFilter(_HIDE_WEBHOOK_REQUESTS)
        self._thread.start()

    def on_event(self, event: Event) -> None:
        if event.type not in WEBHOOK_EVENTS:
            return
        delivery_id = str(uuid.uuid4())
        body = render(event, delivery_id, self.fmt)
        with self._cond:
            if self._deadline is not None:
                return
            for url in self.urls:
                if len(self._queue) >= self.limit:
                    old = self._queue.popleft()
                    self.dropped += 1
                    logger.warning(
                        "webhook queue full (%d): dropped %s delivery %s to %s",
                        self.limit,
                        old.type,
                        old.delivery_id,
                        _site(old.url),
                    )
                self._queue.append(Delivery(url, delivery_id, event.type, body))
            self._cond.notify()

    def close(self, drain_seconds: float = DRAIN_SECONDS) -> None:
        """Deliver what is queued for at most ``drain_seconds``, then stop.

        A request still in flight then is abandoned with its (daemon) thread.
        """
        with self._cond:
            self._deadline = time.monotonic() + drain_seconds
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(drain_seconds + 0.1)
        left = len(self._queue) + int(self._thread.is_alive())
        if left:
            logger.warning("webhooks: %d deliveries left undelivered at shutdown", left)

    def _next(self) -> Delivery | None:
        """The next delivery due, waiting for one; None when it is time to stop."""
        with self._cond:
            while True:
                now = time.monotonic()
                if self._deadline is not None and (not self._queue or now >= self._deadline):
                    return None
                due = [d for d in self._queue if d.due <= now]
                if due:
                    self._queue.remove(due[0])
                    return due[0]
                waits = [d.due - now for d in self._queue]
                if self._deadline is not None:
                    waits.append(self._deadline - now)
                self._cond.wait(min(waits) if waits else None)

    def _run(self) -> None:
        import httpx

        with httpx.Client(headers={"User-Agent": f"corteza/{__version__}"}) as http:
            while (delivery := self._next()) is not None:
                self._attempt(http, delivery)

    def _attempt(self, http: httpx.Client, delivery: Delivery) -> None:
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "X-Corteza-Event": delivery.type,
            "X-Corteza-Delivery": delivery.delivery_id,
            "X-Corteza-Timestamp": timestamp,
        }
        if self.secret:
            headers["X-Corteza-Signature"] = sign(self.secret, timestamp, delivery.body)
        timeout = self.timeout
        if self._deadline is not None:
            timeout = max(0.1, min(timeout, self._deadline - time.monotonic()))
        delivery.attempts += 1
        import httpx

        try:
            response = http.post(
                delivery.url, content=delivery.body, headers=headers, timeout=timeout
            )
        except httpx.HTTPError as exc:
            self._retry(delivery, f"{type(exc).__name__}: {exc}")
            return
        if response.is_success:
            self.delivered += 1
        elif response.status_code >= 500 or response.status_code == 429:
            self._retry(delivery, f"HTTP {response.status_code}")
        else:
            self.failed += 1
            logger.warning(
                "webhook %s to %s refused with HTTP %d; not retried",
                delivery.type,
                _site(delivery.url),
                response.status_code,
            )

    def _retry(self, delivery: Delivery, reason: str) -> None:
        if delivery.attempts > len(self.retry_delays):
            self.failed += 1
            logger.warning(
                "webhook %s to %s failed after %d attempts: %s",
                delivery.type,
                _site(delivery.url),
                delivery.attempts,
                reason,
            )
            return
        delay = self.retry_delays[delivery.attempts - 1]
        logger.info(
            "webhook %s to %s: %s; retrying in %.1f s",
            delivery.type,
            _site(delivery.url),
            reason,
            delay,
        )
        with self._cond:
            delivery.due = time.monotonic() + delay
            self._queue.appendleft(delivery)
