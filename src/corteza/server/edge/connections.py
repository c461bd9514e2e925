"""How many connections the server holds, and for how long: no lockout by idle sockets.

uvicorn's own ``limit_concurrency`` counts every open TCP connection, including
those that never send a request; uvicorn's h11 protocol starts no timer before
the first request, so 63 silent sockets answered every later request 503,
``/health`` included, for as long as they stayed open. Here instead:

- :class:`GuardedH11Protocol` closes a connection that has not completed a
  request head within ``header_timeout_s`` (from its opening, or from the end
  of its previous answer), and keeps at most ``max_idle_per_client``
  connections without a request in progress per client address: a new one
  closes the oldest idle ones of that address (never the new one, so a client
  that connects is served even while another floods its address).
- :class:`ConcurrencyCapMiddleware` sits behind the token check and counts what
  the server really works on: requests in progress and open streams. Over
  ``max_connections`` it answers 503 ``server_busy`` (a WebSocket is closed
  with 1013, try again later); ``/health`` is never counted nor refused.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import h11
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from corteza.wire import error_body

HEALTH_PATH = "/health"
SERVER_BUSY = "server_busy"
TRY_AGAIN_LATER = 1013


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header-read timeout and an idle cap per client."""

    header_timeout_s: float = 10.0
    max_idle_per_client: int = 8

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.last_active = self.loop.time()
        self.header_timer: asyncio.TimerHandle | None = None
        self._arm_header_timer()
        self._close_oldest_idle()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self.waiting_for_request:
            self._cancel_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self.last_active = self.loop.time()
        if self.waiting_for_request and not self.transport.is_closing():
            self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        self._cancel_header_timer()  # the WebSocket protocol owns the transport from here
        super().handle_websocket_upgrade(event)

    @property
    def waiting_for_request(self) -> bool:
        """No request in progress: nothing received yet, or only part of a head."""
        return bool(self.conn.their_state is h11.IDLE)

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self.header_timer = self.loop.call_later(self.header_timeout_s, self._header_timeout)

    def _cancel_header_timer(self) -> None:
        timer = getattr(self, "header_timer", None)
        if timer is not None:
            timer.cancel()
            self.header_timer = None

    def _header_timeout(self) -> None:
        self.header_timer = None
        if self.waiting_for_request and not self.transport.is_closing():
            self.transport.close()

    def _close_oldest_idle(self) -> None:
        host = self.client[0] if self.client else None
        idle = [
            peer
            for peer in self.connections
            if isinstance(peer, GuardedH11Protocol)
            and peer is not self
            and (peer.client[0] if peer.client else None) == host
            and peer.waiting_for_request
            and not peer.transport.is_closing()
        ]
        excess = len(idle) + 1 - self.max_idle_per_client
        if excess > 0:
            idle.sort(key=lambda peer: peer.last_active)
            for peer in idle[:excess]:
                peer.transport.close()


def guarded_protocol(header_timeout_s: float, max_idle_per_client: int) -> type[H11Protocol]:
    """A :class:`GuardedH11Protocol` with these limits, for ``uvicorn.Config(http=...)``."""
    return type(
        "GuardedH11Protocol",
        (GuardedH11Protocol,),
        {"header_timeout_s": header_timeout_s, "max_idle_per_client": max_idle_per_client},
    )


class ConcurrencyCapMiddleware:
    """At most ``limit`` requests and streams in progress; ``/health`` always passes."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.in_progress = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] == HEALTH_PATH:
            await self.app(scope, receive, send)
            return
        if self.in_progress >= self.limit:
            await self._refuse(scope, send)
            return
        self.in_progress += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_progress -= 1

    async def _refuse(self, scope: Scope, send: Send) -> None:
        message = (
            f"Server busy: {self.limit} requests and streams in progress "
            "(--max-connections); try again shortly"
        )
        if scope["type"] == "websocket":
            reason = json.dumps({"error_type": SERVER_BUSY})
            await send({"type": "websocket.close", "code": TRY_AGAIN_LATER, "reason": reason})
            return
        body = json.dumps(error_body(message, SERVER_BUSY)).encode()
        headers: list[tuple[bytes, bytes]] = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", b"1"),
        ]
        start: dict[str, Any] = {"type": "http.response.start", "status": 503, "headers": headers}
        await send(start)
        await send({"type": "http.response.body", "body": body})
