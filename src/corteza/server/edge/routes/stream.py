"""``WS /v1/train/stream``: batches in flight over one connection, applied exactly once.

Protocol (v1):

1. client: ``{"type": "hello", "protocol": "1.0", "run_id": str | null, "window": int,
   "fingerprint": str | null}`` (of the run's data and settings)
2. server: ``{"type": "welcome", "protocol", "run_id", "next_seq", "window", "input_dim",
   "model_config"}`` (a new run when ``run_id`` is null; a known run resumes). A known
   run with another fingerprint is refused (``run_conflict``, naming both), and so is a
   run another live connection holds (``run_busy``)
3. client: binary frames, each an ``application/x-corteza-batch`` body with ``seq``
   metadata; at most ``window`` unanswered
4. server, in seq order: ``{"type": "ack", "seq", "loss", "anomaly_prob", "batch_size",
   "step", "replayed", "dendrite_adjustments", "batch_id"}``; and ``{"type": "durable", "seq"}``
   once a checkpoint holds every batch up to ``seq``
5. on a refused batch: ``{"type": "error", "seq", "error", "error_type", "next_seq"}``,
   then the server closes the connection (the client resumes at ``next_seq``)

Every close the server starts carries a code and a JSON reason (at most 123 bytes:
``{"error_type", "next_seq", "error"}``, the message cut to fit): 1008 for a refused
hello or batch, 1003 for a frame of the wrong kind (binary hello, text batch), 1007
for a hello that is not a small JSON object, 1000 for a stream idle longer than
``stream_idle_s`` (a setting) with no batch in flight, 1011 for a failure of the server's own.
Protocol errors are logged as one WARNING line, never with a traceback.

The server stops reading frames while ``window`` batches are unanswered, so
a fast client cannot queue unbounded work (backpressure through TCP).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.concurrency import run_in_threadpool
from starlette.types import Message

from corteza.server.edge.deps import StateDep
from corteza.server.edge.errors import ApiError
from corteza.server.edge.limits import check_batch_limits
from corteza.server.edge.routes.training import parse_binary_request
from corteza.server.engine.memory import DeviceOutOfMemoryError
from corteza.server.engine.runs import (
    OutOfOrderError,
    RunBusyError,
    RunConflictError,
    check_client_run_id,
)
from corteza.server.engine.trainer import TrainingDivergedError
from corteza.server.state import ServerState
from corteza.wire import PROTOCOL_VERSION, ErrorType

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["training"])

HELLO_TIMEOUT = 30.0  # seconds for the client to say hello
MAX_HELLO_CHARS = 4096  # a hello is a few fields; anything longer is not one
NORMAL = 1000
UNSUPPORTED_DATA = 1003
INVALID_PAYLOAD = 1007
POLICY_VIOLATION = 1008
INTERNAL_ERROR = 1011
MAX_REASON_BYTES = 123  # RFC 6455: a close frame's reason


class StreamError(Exception):
    """Ends the stream: an error message to the client, then a close with ``code``."""

    def __init__(
        self,
        message: str,
        error_type: ErrorType,
        seq: int | None,
        next_seq: int,
        code: int = POLICY_VIOLATION,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.error_type = error_type
        self.next_seq = next_seq
        self.code = code
        self.payload = {
            "type": "error",
            "seq": seq,
            "error": message,
            "error_type": error_type.value,
            "next_seq": next_seq,
        }

    def reason(self) -> str:
        return close_reason(self.message, self.error_type, self.next_seq)


def close_reason(message: str, error_type: ErrorType, next_seq: int) -> str:
    """A JSON close reason that fits a close frame: the message is cut to fit."""
    head: dict[str, Any] = {"error_type": error_type.value, "next_seq": next_seq}
    reason = json.dumps({**head, "error": message})
    while len(reason) > MAX_REASON_BYTES:  # json.dumps escapes to ASCII: chars are bytes
        over = len(reason) - MAX_REASON_BYTES  # a character takes 1 to 12 of them
        message = message[: len(message) - max(1, over // 12)]
        reason = json.dumps({**head, "error": message})
    return reason


def ack(answer: dict[str, Any]) -> dict[str, Any]:
    outputs = answer.get("outputs") or {}
    return {
        "type": "ack",
        "seq": answer.get("seq"),
        "loss": answer.get("loss"),
        "anomaly_prob": outputs.get("anomaly_prob"),
        "batch_size": answer.get("batch_size"),
        "step": answer.get("step"),
        "replayed": bool(answer.get("replayed")),
        "status": answer.get("status", "trained"),
        "dendrite_adjustments": outputs.get("dendrite_adjustments"),
        "batch_id": answer.get("batch_id"),
    }


def parse_hello(message: Message) -> dict[str, Any]:
    """The hello object of the first message, or a :class:`StreamError` that says why not."""
    text = message.get("text")
    if text is None:
        raise StreamError(
            "expected a hello message first (JSON in a text frame), got a binary frame",
            ErrorType.INVALID_REQUEST,
            None,
            0,
            UNSUPPORTED_DATA,
        )
    if len(text) > MAX_HELLO_CHARS:
        raise StreamError(
            f"hello too long: {len(text)} characters; at most {MAX_HELLO_CHARS}",
            ErrorType.MALFORMED_BODY,
            None,
            0,
            INVALID_PAYLOAD,
        )
    try:
        hello = json.loads(text)
    except (ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise StreamError(
            f"hello is not valid JSON: {reason}", ErrorType.MALFORMED_BODY, None, 0, INVALID_PAYLOAD
        ) from None
    if not isinstance(hello, dict) or hello.get("type") != "hello":
        raise StreamError("expected a hello message first", ErrorType.INVALID_REQUEST, None, 0)
    return hello


class StreamSession:
    """One connection of ``WS /v1/train/stream``: handshake, then three tasks.

    ``read`` takes batch frames while the window has room and hands them to the
    worker; ``answer`` awaits their results in order and queues the acks; ``send``
    writes what is queued (acks, durable notices, the final error). The first
    of ``read``/``answer`` to fail ends the session.
    """

    def __init__(self, ws: WebSocket, state: ServerState) -> None:
        self.ws = ws
        self.state = state
        self.loop = asyncio.get_running_loop()
        self.outgoing: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.in_flight: asyncio.Queue[tuple[int, asyncio.Future[dict[str, Any]]] | None] = (
            asyncio.Queue()
        )
        self.run_id = ""
        self.held = False  # this connection holds its run (released when it ends)
        self.window = 1
        self.pending = 0  # batches handed to the worker and not yet answered
        self.slots = asyncio.Semaphore(1)
        self.idle_seconds = state.settings.stream_idle_s
        self.last_active = time.monotonic()  # the last frame received or answer sent

    @property
    def next_seq(self) -> int:
        return self.state.runs.open(self.run_id).next_seq if self.run_id else 0

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            if self.held:
                self.state.runs.release(self.run_id)

    async def _run(self) -> None:
        await self.ws.accept()
        try:
            await self.handshake()
        except StreamError as exc:
            await self._send_quietly(exc.payload)
            await self.close(exc)
            return
        except (asyncio.TimeoutError, TimeoutError):
            await self.close(
                StreamError(
                    f"no hello within {HELLO_TIMEOUT:g} s", ErrorType.REQUEST_TIMEOUT, None, 0
                ),
                send=True,
            )
            return
        except WebSocketDisconnect:
            return
        self.state.checkpointer.add_listener(self.on_durable)
        try:
            await self.pump()
        finally:
            self.state.checkpointer.remove_listener(self.on_durable)

    async def receive(self, timeout: float | None) -> Message:
        """The next data message; a client's close raises :class:`WebSocketDisconnect`."""
        message = await asyncio.wait_for(self.ws.receive(), timeout)
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(int(message.get("code", NORMAL)))
        return message

    async def handshake(self) -> None:
        """Read hello, open the run, answer welcome."""
        hello = parse_hello(await self.receive(HELLO_TIMEOUT))
        protocol = str(hello.get("protocol", ""))
        if protocol.split(".")[0] != PROTOCOL_VERSION.split(".")[0]:
            raise StreamError(
                f"Unsupported protocol version {protocol[:20]}; this server speaks "
                f"{PROTOCOL_VERSION.split('.')[0]}.x",
                ErrorType.UNSUPPORTED_PROTOCOL,
                None,
                0,
            )
        run_id, fingerprint = hello.get("run_id"), hello.get("fingerprint")
        try:
            if fingerprint is not None and not isinstance(fingerprint, str):
                raise ValueError("fingerprint must be a string")
            run = self.state.runs.hold(
                None if run_id is None else check_client_run_id(str(run_id)), fingerprint
            )
        except RunConflictError as exc:
            raise StreamError(str(exc), ErrorType.RUN_CONFLICT, None, 0) from exc
        except RunBusyError as exc:
            raise StreamError(str(exc), ErrorType.RUN_BUSY, None, 0) from exc
        except ValueError as exc:
            raise StreamError(str(exc), ErrorType.INVALID_REQUEST, None, 0) from exc
        self.run_id, self.held = run.run_id, True
        asked = hello.get("window", 4)
        largest = self.state.settings.stream_window
        self.window = max(1, min(asked if isinstance(asked, int) else 4, largest))
        self.slots = asyncio.Semaphore(self.window)
        cfg = self.state.trainer.config
        await self.ws.send_json(
            {
                "type": "welcome",
                "protocol": PROTOCOL_VERSION,
                "run_id": run.run_id,
                "next_seq": run.next_seq,
                "window": self.window,
                "input_dim": cfg.input_dim,
                "model_config": cfg.to_dict(),
            }
        )

    def on_durable(self, durable: dict[str, int]) -> None:  # called on the worker's thread
        if self.run_id in durable:
            message = {"type": "durable", "seq": durable[self.run_id]}
            self.loop.call_soon_threadsafe(self.outgoing.put_nowait, message)

    async def read(self) -> None:
        while True:
            await self.slots.acquire()
            data = (await self.next_frame()).get("bytes")
            if data is None:
                raise StreamError(
                    "expected a batch (a binary frame), got a text frame",
                    ErrorType.INVALID_REQUEST,
                    None,
                    self.next_seq,
                    UNSUPPORTED_DATA,
                )
            try:
                batch, frame_run, seq = await run_in_threadpool(
                    parse_binary_request, data, self.state.trainer.config
                )
                check_batch_limits(batch.inputs.shape, self.state.settings)
            except ApiError as exc:
                raise StreamError(exc.message, exc.error_type, None, self.next_seq) from None
            if seq is None or (frame_run is not None and frame_run != self.run_id):
                raise StreamError(
                    "each frame needs seq metadata (and this connection's run_id, if any)",
                    ErrorType.INVALID_REQUEST,
                    seq,
                    self.next_seq,
                )
            self.pending += 1
            future = self.state.worker.submit_train(batch, self.run_id, seq, held=True)
            await self.in_flight.put((seq, future))

    async def next_frame(self) -> Message:
        """The next frame; none for ``idle_seconds`` with no batch in flight closes the stream."""
        while True:
            quiet = time.monotonic() - self.last_active
            if not self.pending and quiet >= self.idle_seconds:
                raise StreamError(
                    f"No batch for {self.idle_seconds:g} s: closing the idle stream",
                    ErrorType.REQUEST_TIMEOUT,
                    None,
                    self.next_seq,
                    NORMAL,
                )
            with contextlib.suppress(asyncio.TimeoutError, TimeoutError):  # idle, or training
                message = await self.receive(self.idle_seconds - (0 if self.pending else quiet))
                self.last_active = time.monotonic()
                return message

    async def answer(self) -> None:
        while True:
            item = await self.in_flight.get()
            if item is None:
                return
            seq, future = item
            try:
                result = await future
            except OutOfOrderError as exc:
                raise StreamError(str(exc), ErrorType.OUT_OF_ORDER, seq, exc.next_seq) from None
            except TrainingDivergedError as exc:
                raise StreamError(
                    str(exc), ErrorType.TRAINING_DIVERGED, seq, self.next_seq
                ) from None
            except DeviceOutOfMemoryError as exc:
                raise StreamError(str(exc), ErrorType.OUT_OF_MEMORY, seq, self.next_seq) from None
            self.pending -= 1
            self.last_active = time.monotonic()
            await self.outgoing.put(ack(result))
            self.slots.release()

    async def send(self) -> None:
        while (message := await self.outgoing.get()) is not None:
            await self.ws.send_json(message)

    async def pump(self) -> None:
        self.last_active = time.monotonic()  # idle counts from the welcome
        sender = asyncio.create_task(self.send())
        tasks = [asyncio.create_task(self.read()), asyncio.create_task(self.answer())]
        ending: StreamError | None = None
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                failure = task.exception()
                if isinstance(failure, StreamError):
                    ending = ending or failure
                    await self.outgoing.put(failure.payload)
                elif failure is not None and not isinstance(failure, WebSocketDisconnect):
                    logger.error("stream of run %s failed", self.run_id, exc_info=failure)
                    ending = StreamError(
                        "Internal server error; the details are in the server log",
                        ErrorType.INTERNAL_ERROR,
                        None,
                        self.next_seq,
                        INTERNAL_ERROR,
                    )
        finally:
            for task in tasks:
                task.cancel()
            await self.outgoing.put(None)
            with contextlib.suppress(Exception):
                await sender
            if ending is not None:
                await self.close(ending)

    async def close(self, error: StreamError, send: bool = False) -> None:
        """Close with ``error``'s code and JSON reason; one WARNING line (not for idle)."""
        if send:
            await self._send_quietly(error.payload)
        if error.code != INTERNAL_ERROR:
            level = logging.INFO if error.code == NORMAL else logging.WARNING
            logger.log(
                level,
                "stream %s closed (%d): %s [%s]",
                self.run_id or "before hello",
                error.code,
                error.message[:200],
                error.error_type.value,
            )
        with contextlib.suppress(Exception):
            await self.ws.close(error.code, error.reason())

    async def _send_quietly(self, message: dict[str, Any]) -> None:
        with contextlib.suppress(Exception):
            await self.ws.send_json(message)


@router.websocket("/train/stream")
async def train_stream(ws: WebSocket, state: StateDep) -> None:
    """Train a stream of binary batches with a window in flight; see the module docstring."""
    await StreamSession(ws, state).run()
