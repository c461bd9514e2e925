"""Limits on what a client may make the server hold: body size and speed, batch shape.

Bodies are capped while they stream in (pure ASGI, nothing buffered here): a
``Content-Length`` over the route's cap is answered 413 before a byte of the
body is read; otherwise bytes are counted as the app receives them and the
request is cut off with 413 as soon as the count passes the cap. A body that
stalls is cut off with 408: each read waits at most ``body_timeout_s``, and the
whole body must arrive within ``body_timeout_s`` plus one second per
``body_min_rate_kb`` KB received (Apache's ``mod_reqtimeout`` rule), so a
trickle of one byte a second cannot hold a connection for long. Both answers
close the connection.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corteza.server.edge.connections import guarded_protocol
from corteza.server.edge.errors import ApiError, send_error
from corteza.wire import ErrorType

if TYPE_CHECKING:
    from corteza.server.settings import Settings

MB = 1024 * 1024
KB = 1024
# Routes that carry batches or upload chunks; every other route gets the small cap.
BATCH_ROUTES = frozenset({"/train_layer2", "/v1/predict"})
UPLOAD_PREFIXES = ("/v1/checkpoint/uploads/", "/v1/datasets/uploads/")  # and tus PATCHes


def body_cap(path: str, settings: Settings) -> tuple[int, str]:
    """The byte cap of ``path`` and the message that refuses a body over it."""
    if path in BATCH_ROUTES or path.startswith(UPLOAD_PREFIXES):
        cap, limit = settings.max_body_mb * MB, f"{settings.max_body_mb:g} MB (--max-body-mb)"
    else:
        cap = settings.max_small_body_kb * KB
        limit = f"{settings.max_small_body_kb:g} KB (--max-small-body-kb)"
    return int(cap), f"Request body too large: this route takes at most {limit}"


def too_slow_message(settings: Settings) -> str:
    return (
        f"Request body too slow: the server waits at most {settings.body_timeout_s:g} s for more "
        f"data and needs {settings.body_min_rate_kb:g} KB/s on average"
    )


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _has_body(scope: Scope, declared: int | None) -> bool:
    """Whether the request announces a body: a positive length or a chunked transfer."""
    if declared is not None:
        return declared > 0
    return any(name == b"transfer-encoding" for name, _ in scope["headers"])


class BodyLimitMiddleware:
    """Caps request bodies by size and speed while they stream in; see the module docstring.

    Reads ``settings`` on every request. When the app is refused a body, its
    own answer (whatever it made of the failed read) is replaced by the 413 or 408.
    """

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        settings = self.settings
        cap, too_large = body_cap(scope["path"], settings)
        declared = _content_length(scope)
        if declared is not None and declared > cap:
            await send_error(scope, send, 413, too_large, ErrorType.PAYLOAD_TOO_LARGE)
            return
        timeout = settings.body_timeout_s
        rate = settings.body_min_rate_kb * KB
        started = time.monotonic()
        received = 0
        # A request without a body (a GET, an event stream, a download) has nothing to
        # time: its later receive() calls only wait for the disconnect.
        complete = not _has_body(scope, declared)
        refusal: ApiError | None = None
        response_started = False
        replaced = False

        async def limited_receive() -> Message:
            nonlocal received, complete, refusal
            if refusal is not None:
                raise refusal
            if complete:  # after the body: a wait for http.disconnect (streaming answers)
                return await receive()
            wait = timeout
            if rate > 0:
                wait = min(wait, started + timeout + received / rate - time.monotonic())
            try:
                message = await asyncio.wait_for(receive(), max(wait, 0.0))
            except asyncio.TimeoutError:
                refusal = ApiError(408, too_slow_message(settings), ErrorType.REQUEST_TIMEOUT)
                raise refusal from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    refusal = ApiError(413, too_large, ErrorType.PAYLOAD_TOO_LARGE)
                    raise refusal
                complete = not message.get("more_body", False)
            else:
                complete = True
            return message

        async def replacing_send(message: Message) -> None:
            nonlocal response_started, replaced
            if refusal is None or response_started:
                response_started = response_started or message["type"] == "http.response.start"
                await send(message)
            elif not replaced:
                replaced = True
                await send_error(scope, send, refusal.status, refusal.message, refusal.error_type)

        try:
            await self.app(scope, limited_receive, replacing_send)
        except Exception:
            if refusal is None or response_started:
                raise
        if refusal is not None and not replaced and not response_started:
            await send_error(scope, send, refusal.status, refusal.message, refusal.error_type)


def check_batch_limits(shape: tuple[int, ...], settings: Settings) -> None:
    """Refuse a batch over ``max_batch_samples`` samples or ``max_seq_len`` steps (413)."""
    if shape[0] > settings.max_batch_samples:
        raise ApiError(
            413,
            f"Batch too large: {shape[0]} samples; this server takes at most "
            f"{settings.max_batch_samples} per batch (--max-batch-samples)",
            ErrorType.BATCH_TOO_LARGE,
        )
    if len(shape) == 3 and shape[1] > settings.max_seq_len:
        raise ApiError(
            413,
            f"Sequence too long: {shape[1]} time steps; this server takes at most "
            f"{settings.max_seq_len} (--max-seq-len)",
            ErrorType.SEQUENCE_TOO_LONG,
        )


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments of ``uvicorn.run`` / ``uvicorn.Config`` that enforce ``settings``."""
    # No limit_concurrency: it counts idle sockets too (see edge/connections.py); the cap on
    # work in progress is ConcurrencyCapMiddleware, behind the token check.
    return {
        "http": guarded_protocol(settings.header_timeout_s, settings.max_idle_per_client),
        "ws_max_size": int(settings.ws_max_frame_mb * MB),
        "timeout_keep_alive": settings.keep_alive_s,
    }
