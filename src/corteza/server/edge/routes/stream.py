"""``WS /v1/train/stream``: batches in flight over one connection, applied exactly once.

Protocol (v1):

1. client: ``{"type": "hello", "protocol": "1.0", "run_id": str | null, "window": int}``
2. server: ``{"type": "welcome", "protocol", "run_id", "next_seq", "window", "input_dim",
   "model_config"}`` (a new run when ``run_id`` is null; a known run resumes)
3. client: binary frames, each an ``application/x-corteza-batch`` body with ``seq``
   metadata; at most ``window`` unanswered
4. server, in seq order: ``{"type": "ack", "seq", "loss", "anomaly_prob", "batch_size",
   "step", "replayed", "dendrite_adjustments", "batch_id"}``; and ``{"type": "durable", "seq"}``
   once a checkpoint holds every batch up to ``seq``
5. on a refused batch: ``{"type": "error", "seq", "error", "error_type", "next_seq"}``,
   then the server closes the connection (the client resumes at ``next_seq``)

The server stops reading frames while ``window`` batches are unanswered, so
a fast client cannot queue unbounded work (backpressure through TCP).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.concurrency import run_in_threadpool

from corteza.server.edge.deps import StateDep
from corteza.server.edge.errors import ApiError
from corteza.server.edge.limits import check_batch_limits
from corteza.server.edge.routes.training import parse_binary_request
from corteza.server.engine.runs import OutOfOrderError, check_run_id
from corteza.server.engine.trainer import TrainingDivergedError
from corteza.server.state import ServerState
from corteza.wire import PROTOCOL_VERSION, ErrorType

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["training"])

HELLO_TIMEOUT = 30.0  # seconds for the client to say hello
POLICY_VIOLATION = 1008


class StreamError(Exception):
    """Ends the stream with an error message to the client."""

    def __init__(self, message: str, error_type: ErrorType, seq: int | None, next_seq: int):
        super().__init__(message)
        self.payload = {
            "type": "error",
            "seq": seq,
            "error": message,
            "error_type": error_type.value,
            "next_seq": next_seq,
        }


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
        "dendrite_adjustments": outputs.get("dendrite_adjustments"),
        "batch_id": answer.get("batch_id"),
    }


async def handshake(ws: WebSocket, state: ServerState) -> tuple[str, int]:
    """Read hello, open the run, answer welcome; returns (run_id, window)."""
    hello = await asyncio.wait_for(ws.receive_json(), HELLO_TIMEOUT)
    if not isinstance(hello, dict) or hello.get("type") != "hello":
        raise StreamError("expected a hello message first", ErrorType.INVALID_REQUEST, None, 0)
    protocol = str(hello.get("protocol", ""))
    if protocol.split(".")[0] != PROTOCOL_VERSION.split(".")[0]:
        raise StreamError(
            f"Unsupported protocol version {protocol[:20]}; this server speaks "
            f"{PROTOCOL_VERSION.split('.')[0]}.x",
            ErrorType.UNSUPPORTED_PROTOCOL,
            None,
            0,
        )
    run_id = hello.get("run_id")
    try:
        run = state.runs.open(None if run_id is None else check_run_id(str(run_id)))
    except ValueError as exc:
        raise StreamError(str(exc), ErrorType.INVALID_REQUEST, None, 0) from exc
    asked = hello.get("window", 4)
    window = max(1, min(int(asked) if isinstance(asked, int) else 4, state.settings.stream_window))
    cfg = state.trainer.config
    await ws.send_json(
        {
            "type": "welcome",
            "protocol": PROTOCOL_VERSION,
            "run_id": run.run_id,
            "next_seq": run.next_seq,
            "window": window,
            "input_dim": cfg.input_dim,
            "model_config": cfg.to_dict(),
        }
    )
    return run.run_id, window


@router.websocket("/train/stream")
async def train_stream(ws: WebSocket, state: StateDep) -> None:
    """Train a stream of binary batches with a window in flight; see the module docstring."""
    await ws.accept()
    outgoing: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    run_id = ""

    def on_durable(durable: dict[str, int]) -> None:  # called on the worker's thread
        if run_id in durable:
            message = {"type": "durable", "seq": durable[run_id]}
            loop.call_soon_threadsafe(outgoing.put_nowait, message)

    try:
        run_id, window = await handshake(ws, state)
    except (StreamError, asyncio.TimeoutError, ValueError, WebSocketDisconnect) as exc:
        if isinstance(exc, StreamError):
            await ws.send_json(exc.payload)
        with contextlib.suppress(Exception):
            await ws.close(POLICY_VIOLATION)
        return
    state.checkpointer.add_listener(on_durable)
    slots = asyncio.Semaphore(window)
    in_flight: asyncio.Queue[tuple[int | None, asyncio.Future[dict[str, Any]]] | None] = (
        asyncio.Queue()
    )

    async def read() -> None:
        while True:
            await slots.acquire()
            data = await ws.receive_bytes()
            try:
                batch, frame_run, seq = await run_in_threadpool(
                    parse_binary_request, data, state.trainer.config
                )
                check_batch_limits(batch.inputs.shape, state.settings)
            except ApiError as exc:
                run = state.runs.open(run_id)
                raise StreamError(exc.message, exc.error_type, None, run.next_seq) from exc
            if seq is None or (frame_run is not None and frame_run != run_id):
                raise StreamError(
                    "each frame needs seq metadata (and this connection's run_id, if any)",
                    ErrorType.INVALID_REQUEST,
                    seq,
                    state.runs.open(run_id).next_seq,
                )
            await in_flight.put((seq, state.worker.submit_train(batch, run_id, seq)))

    async def answer() -> None:
        while True:
            item = await in_flight.get()
            if item is None:
                return
            seq, future = item
            try:
                result = await future
            except OutOfOrderError as exc:
                raise StreamError(str(exc), ErrorType.OUT_OF_ORDER, seq, exc.next_seq) from exc
            except TrainingDivergedError as exc:
                next_seq = state.runs.open(run_id).next_seq
                raise StreamError(str(exc), ErrorType.TRAINING_DIVERGED, seq, next_seq) from exc
            await outgoing.put(ack(result))
            slots.release()

    async def send() -> None:
        while (message := await outgoing.get()) is not None:
            await ws.send_json(message)

    sender = asyncio.create_task(send())
    tasks = [asyncio.create_task(read()), asyncio.create_task(answer())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            failure = task.exception()
            if isinstance(failure, StreamError):
                await outgoing.put(failure.payload)
            elif failure is not None and not isinstance(failure, WebSocketDisconnect):
                logger.error("stream of run %s failed", run_id, exc_info=failure)
    finally:
        state.checkpointer.remove_listener(on_durable)
        for task in tasks:
            task.cancel()
        await outgoing.put(None)
        with contextlib.suppress(Exception):
            await sender
        with contextlib.suppress(Exception):
            await ws.close(POLICY_VIOLATION)
