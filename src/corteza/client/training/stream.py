"""Streaming training: a window of batches in flight, exactly once, through restarts.

The client numbers the batches of a run globally, ``seq = epoch * batches_per_epoch
+ index``, and sends them as binary frames over ``WS /v1/train/stream``, at most
``window`` unanswered. The server applies each ``(run_id, seq)`` once and answers
in order. Any batch can be regenerated from ``(seed, epoch)``
(:func:`~corteza.client.data.datasets.batch_order`), so the client holds none: after a
dropped connection or a server restart it reconnects with backoff, says hello
with the same ``run_id``, and goes on from the server's ``next_seq``. A server
without the stream (an older corteza, a proxy that refuses WebSockets) gets one
request per batch on ``POST /train_layer2``, under the same exactly-once rules.

>>> trainer = StreamingTrainer(Client(url), X, y, epochs=3, window=4)  # doctest: +SKIP
>>> summary = trainer.run()  # doctest: +SKIP

While it waits for a server, the trainer re-reads the user's saved server
(``corteza connect``), so a Colab tunnel that comes back under a new URL is
found without restarting the run.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
from numpy.typing import NDArray
from pydantic import ValidationError
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from corteza.client.backoff import Attempts, Backoff
from corteza.client.calls import GATEWAY_STATUSES, Call, M, feedback_call, parse_answer
from corteza.client.client import Client
from corteza.client.errors import (
    InvalidRequestError,
    NotFoundError,
    OutOfOrderError,
    ProtocolError,
    TransportError,
)
from corteza.client.payloads import refusal
from corteza.client.saved_server import Locator, follow_saved_server
from corteza.client.training.batches import Batches
from corteza.client.training.channel import (
    NoWebSocketError,
    ResyncError,
    UnreachableError,
    Welcome,
    describe,
    open_stream,
    raise_error,
    receive,
    say_hello,
)
from corteza.client.training.ledger import Ledger
from corteza.client.training.progress import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_FEEDBACK_EVERY,
    DEFAULT_WINDOW,
    Ack,
    BatchReport,
    Cadence,
    EventCallback,
    FitSummary,
    Transport,
)
from corteza.client.training.run_calls import checkpoint_warning, say_finished
from corteza.wire import BATCH_CONTENT_TYPE, HealthResponse, TrainResponse, dimension_mismatch

logger = logging.getLogger(__name__)

FINGERPRINT_HEADER = "X-Corteza-Run-Fingerprint"  # the run's data and settings, over REST
MAX_RESYNCS = 5  # out-of-order answers in a row, with no batch acknowledged between


class StreamingTrainer:
    """Trains (X, y) for ``epochs`` passes through a server, a ``window`` of batches in flight.

    Progress goes to ``on_batch`` (a :class:`~corteza.client.training.progress.BatchReport` per
    batch, each seq once), news to ``on_event(kind, message)``: ``connected``,
    ``resumed``, ``waiting`` (the server is unreachable; retrying),
    ``fallback`` (no WebSocket there: one request per batch), ``warning``.
    Attempts to reach the server go on until ``give_up_after`` seconds of
    failing in a row (None: forever), waiting per ``backoff``. ``transport="rest"``
    sends one request per batch from the start, as does a client whose httpx
    transport was injected (an ASGI app has no socket for a WebSocket).
    ``locate`` says where the server is before each attempt (default:
    :func:`~corteza.client.saved_server.follow_saved_server`).
    """

    def __init__(
        self,
        client: Client,
        X: NDArray[np.float32],
        y: NDArray[np.float32],
        *,
        epochs: int = 1,
        batch_size: int = DEFAULT_BATCH_SIZE,
        seed: int = 0,
        window: int = DEFAULT_WINDOW,
        run_id: str | None = None,
        feedback_every: int = DEFAULT_FEEDBACK_EVERY,
        until_loss: float | None = None,
        on_batch: Callable[[BatchReport], None] | None = None,
        on_event: EventCallback | None = None,
        give_up_after: float | None = None,
        backoff: Backoff = Backoff(),
        transport: Transport = "stream",
        locate: Locator | None = None,
        dendrite_target: NDArray[np.float32] | None = None,
        coherence_target: NDArray[np.float32] | None = None,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self._batches = Batches(X, y, batch_size, seed, epochs, dendrite_target, coherence_target)
        self.client = client
        self.window = window
        self.run_id = run_id
        self.on_batch = on_batch
        self.on_event = on_event
        if not client.has_socket:
            transport = "rest"  # an injected transport (an ASGI app): no socket for a WebSocket
        self.transport: Transport = transport
        self.locate = locate or follow_saved_server(client.url, client.token)
        self.max_in_flight = 0  # the most batches ever sent and not yet answered
        self.fingerprint = self._batches.fingerprint()
        self._ledger = Ledger(self._batches, transport)
        self.summary: FitSummary = self._ledger.summary
        self._cadence = Cadence(feedback_every, until_loss)
        self._input_dim: int | None = None
        self._attempts = Attempts(backoff, give_up_after)
        self._resyncs = 0
        self._connected_once = False
        self._answered = False  # a corteza server has answered during this run
        self._url, self._token = client.url, client.token  # the server now in use
        self._started = 0.0

    @property
    def total(self) -> int:
        """Batches in the whole run."""
        return self._batches.total

    # ------------------------------------------------------------ the loop

    def run(self) -> FitSummary:
        """Train to the end (or to ``until_loss``) and return the summary."""
        self._started = time.perf_counter()
        while not self._done():
            url, token = self._url, self._token = self.locate()
            try:
                if self.transport == "stream":
                    self._stream(url, token)
                else:
                    self._rest(url, token)
            except NoWebSocketError as exc:
                self._probe(url, token)
                self.transport = "rest"
                self._event(
                    "fallback",
                    f"WebSocket unavailable at {url} ({exc}): falling back to one request "
                    "per batch",
                )
            except ResyncError as exc:
                self._resyncs += 1
                if self._resyncs > MAX_RESYNCS:
                    raise ProtocolError(f"{url} keeps refusing the batches' order: {exc}") from exc
                logger.info("resynchronising run %s: %s", self.run_id, exc)
            except UnreachableError as exc:
                self._wait(url, str(exc))
        if self.transport == "rest":
            say_finished(self.client, self._url, self._token, self.run_id)
        if (warning := checkpoint_warning(self.client, self._url, self._token)) is not None:
            self._event("warning", warning)
        self.summary.seconds = time.perf_counter() - self._started
        self.summary.run_id = self.run_id
        self.summary.transport = self.transport
        return self.summary

    def _done(self) -> bool:
        return self._ledger.done()

    def _wait(self, url: str, reason: str) -> None:
        delay = self._attempts.failed(url, reason)
        self._event("waiting", f"server {url} unreachable ({reason}), retrying in {delay:.3g} s")
        time.sleep(delay)

    def _event(self, kind: str, message: str) -> None:
        if kind in ("waiting", "warning", "fallback"):
            logger.warning("%s", message)
        else:
            logger.info("%s", message)
        if self.on_event is not None:
            self.on_event(kind, message)

    # ------------------------------------------------------------ WebSocket

    def _stream(self, url: str, token: str | None) -> None:
        with open_stream(url, token) as ws:
            welcome = self._handshake(ws)
            window = max(1, min(self.window, welcome.window))
            first = not self._connected_once and self._ledger.counted == 0
            start = self._resume_at(welcome.next_seq, window)
            if first and welcome.next_seq:
                self.summary.resumed_batches = min(welcome.next_seq, self.total)
            if not self._connected_once:
                self._connected_once = True
                self._event(
                    "connected",
                    f"streaming to {url}: run {self.run_id} from batch {start}, window {window}",
                )
            else:
                self._event("resumed", f"resumed run {self.run_id} at {url} from batch {start}")
            in_flight: deque[int] = deque()
            following = start
            try:
                while not self._done():
                    while (
                        not self._ledger.stopping
                        and following < self.total
                        and len(in_flight) < window
                    ):
                        frame = self._frame(following)
                        ws.send(frame)
                        in_flight.append(following)
                        following += 1
                        self.max_in_flight = max(self.max_in_flight, len(in_flight))
                    if not in_flight:
                        return
                    self._handle(receive(ws), in_flight)
                    self._ledger.pending = len(in_flight)
            except (ConnectionClosed, OSError) as exc:
                self._ledger.pending = len(in_flight)
                raise UnreachableError(describe(exc)) from exc

    def _handshake(self, ws: ClientConnection) -> Welcome:
        try:
            welcome = say_hello(ws, self.run_id, self.window, self.fingerprint)
        except InvalidRequestError as exc:
            raise self._busy_with_ours(exc) from exc
        self.run_id = welcome.run_id
        self._answered = True
        self._input_dim = welcome.input_dim
        self._check_width(welcome.input_dim)
        return welcome

    def _busy_with_ours(self, exc: InvalidRequestError) -> Exception:
        """``run_busy`` once we connected is our own stream, not yet seen closed: wait."""
        ours = exc.error_type == "run_busy" and self._connected_once
        return UnreachableError(str(exc)) if ours else exc

    def _handle(self, message: dict[str, Any], in_flight: deque[int]) -> None:
        kind = message.get("type")
        if kind == "ack":
            try:
                ack = Ack.model_validate(message)
            except ValidationError as exc:
                raise ProtocolError(f"malformed ack from the server: {exc}") from exc
            if ack.seq != in_flight[0]:
                raise ProtocolError(
                    f"the server acknowledged seq {ack.seq}, expected {in_flight[0]}"
                )
            self._accept(in_flight.popleft(), ack, None)
        elif kind == "durable":
            seq = message.get("seq")
            if isinstance(seq, int):
                self.summary.durable_seq = max(seq, self.summary.durable_seq or -1)
        elif kind == "error":
            raise_error(message)
        else:
            logger.debug("ignoring a %r message from the server", kind)

    # ------------------------------------------------------------ one request per batch

    def _probe(self, url: str, token: str | None) -> None:
        """Is a corteza server there, without the stream (or is the tunnel gone)?"""
        call = Call(HealthResponse, "GET", "/health", idempotent=True)
        try:
            response = self.client.send_to(url, call, token)
        except httpx.HTTPError as exc:
            raise UnreachableError(describe(exc)) from exc
        self._answer(call, response, url)

    def _answer(self, call: Call[M], response: httpx.Response, url: str) -> M:
        """The parsed answer; a page that is not corteza's means the tunnel is gone, mid-run.

        Before any corteza answer in this run it means a wrong URL, and is raised.
        """
        if response.status_code in GATEWAY_STATUSES:
            raise UnreachableError(f"HTTP {response.status_code}")
        try:
            result = parse_answer(call, response, url)
        except ProtocolError as exc:
            if not self._answered:
                raise
            raise UnreachableError(str(exc)) from exc
        except InvalidRequestError as exc:
            raise self._busy_with_ours(exc) from exc
        self._answered = True
        return result

    def _rest(self, url: str, token: str | None) -> None:
        if self.run_id is None:
            self.run_id = uuid.uuid4().hex  # no hello to get one from the server
        headers = {"Content-Type": BATCH_CONTENT_TYPE, FINGERPRINT_HEADER: self.fingerprint}
        seq = self._ledger.counted
        while not self._done():
            call = Call(
                TrainResponse,
                "POST",
                "/train_layer2",
                idempotent=False,
                content=self._frame(seq),
                headers=headers,
            )
            try:
                response = self.client.send_to(url, call, token)
            except httpx.HTTPError as exc:
                raise UnreachableError(describe(exc)) from exc
            try:
                answer = self._answer(call, response, url)
            except OutOfOrderError as exc:
                if exc.next_seq is None:
                    raise
                self._resyncs += 1
                if self._resyncs > MAX_RESYNCS:
                    raise
                seq = self._resume_at(exc.next_seq, 1)
                continue
            self._accept(seq, Ack.from_response(answer), answer)
            seq += 1

    # ------------------------------------------------------------ bookkeeping

    def _resume_at(self, next_seq: int, window: int) -> int:
        """The seq to send first, given the server's ``next_seq`` (see :meth:`Ledger.resume_at`)."""
        start = self._ledger.resume_at(next_seq, window)
        counted = self._ledger.counted
        if start < counted:
            self._event(
                "warning",
                f"the server holds run {self.run_id} up to batch {start} only; "
                f"training batches {start}-{counted - 1} again",
            )
        return start

    def _accept(self, seq: int, ack: Ack, response: TrainResponse | None) -> None:
        """Count a trained batch once, send feedback, report, test until_loss."""
        if not self._ledger.count(seq, ack):
            return
        self._attempts.succeeded()
        self._resyncs = 0
        if self._cadence.feedback_due(self.summary.batches):
            self._feedback(ack)
        report = self._ledger.report(seq, ack, response, time.perf_counter() - self._started)
        if self.on_batch is not None:
            self.on_batch(report)
        if self._cadence.reached(self.summary.losses):
            self.summary.reached_target = True
            self._ledger.stopping = True

    def _feedback(self, ack: Ack) -> None:
        """The seed's dendritic feedback, validated when the loss improved since the last."""
        if ack.loss is None or ack.dendrite_adjustments is None:
            return
        improved = self._cadence.validates(ack.loss)
        url = self._url
        # The ack's own batch: with a window in flight, "the latest" is another one.
        call = feedback_call(ack.dendrite_adjustments, improved, ack.batch_id)
        try:
            parse_answer(call, self.client.send_to(url, call, self._token), url)
        except httpx.HTTPError as exc:
            self._event("warning", f"feedback not sent: {describe(exc)}")
            return
        except (TransportError, NotFoundError) as exc:  # NotFound: a restarted server forgot it
            self._event("warning", f"feedback not sent: {exc}")
            return
        self.summary.feedback_sent += 1
        self.summary.feedback_validated += int(improved)
        self._cadence.feedback_sent(ack.loss)

    def _frame(self, seq: int) -> bytes:
        width = self._input_dim or int(self._batches.X.shape[-1])
        check = width if self.client.check else None
        return self._batches.frame(
            seq, run_id=self.run_id, dtype=self.client.wire_dtype, check=check
        )

    def _check_width(self, input_dim: int) -> None:
        width = int(self._batches.X.shape[-1])
        if self.client.check and width != input_dim:
            raise refusal(dimension_mismatch(input_dim, width))
