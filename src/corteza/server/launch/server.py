"""The uvicorn server behind an optional tunnel: ``corteza serve``, ``serve_in_background``
and the tests run this one class.

The tunnel (see :mod:`corteza.server.launch.tunnel`) opens once the server is
bound and closes when it stops; its host name joins the Host allow-list before
anything is served through it.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import uvicorn

from corteza.server.app import create_app
from corteza.server.edge.limits import uvicorn_options
from corteza.server.launch.tunnel import Tunnel, TunnelError, make_tunnel
from corteza.server.settings import Settings


def loopback(host: str) -> str:
    """The address that reaches, from this machine, a server bound on ``host``."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def expose(settings: Settings, public_url: str) -> None:
    """Let requests through the tunnel in: its host joins the Host allow-list."""
    host = urlsplit(public_url).hostname
    if host and host not in settings.allowed_hosts:
        settings.allowed_hosts.append(host)


class TunnelledServer(uvicorn.Server):
    """A uvicorn server that opens its tunnel once bound and closes it when it stops.

    The tunnel is started on the server's own thread, so the parent-death
    signal ties cloudflared to the server's life. ``ready`` is set when the
    start-up is over, with ``local_url`` and ``public_url`` or ``tunnel_error``
    filled in.
    """

    def __init__(
        self,
        settings: Settings,
        tunnel: Tunnel | None,
        on_ready: Callable[[str | None, int], None] | None = None,
        **config: Any,
    ) -> None:
        """``config``: uvicorn.Config arguments over those made from ``settings``."""
        self.app = create_app(settings)
        options: dict[str, Any] = {
            "host": settings.host,
            "port": settings.port,
            "log_level": settings.log_level,
            "timeout_graceful_shutdown": 30,
            **uvicorn_options(settings),
            **config,
        }
        super().__init__(uvicorn.Config(self.app, **options))
        self.settings = settings
        self.tunnel = tunnel
        self.on_ready = on_ready
        self.local_url = f"http://{loopback(self.config.host)}:{self.config.port}"
        self.public_url: str | None = None
        self.tunnel_error: TunnelError | None = None
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets)
            port = self.config.port
            if self.started:
                port = self.servers[0].sockets[0].getsockname()[1]  # the real one, for port 0
                self.local_url = f"http://{loopback(self.config.host)}:{port}"
            if self.tunnel is not None and self.started and not self.should_exit:
                self._open_tunnel(self.tunnel)
            if self.on_ready is not None and self.started and not self.should_exit:
                self.on_ready(self.public_url, port)
        finally:
            self.ready.set()

    def _open_tunnel(self, tunnel: Tunnel) -> None:
        # Blocks the loop on purpose: nothing should be served before the public
        # URL is on the Host allow-list.
        try:
            self.public_url = tunnel.start(self.local_url)
            expose(self.settings, self.public_url)
        except TunnelError as exc:
            self.tunnel_error = exc
            self.should_exit = True  # uvicorn still runs the shutdown: the lifespan closes

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Event streams never end by themselves: end them first, or they would hold the
        # graceful shutdown for its whole timeout (a signal ends them too, but a server in
        # a notebook's thread gets none).
        state = getattr(self.app.state, "corteza", None)  # None when the start-up failed
        if state is not None:
            state.events.close()
        try:
            await super().shutdown(sockets)
        finally:
            self.close_tunnel()

    def run(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            super().run(sockets)
        finally:
            self.close_tunnel()  # also when the start-up crashed

    def close_tunnel(self) -> None:
        if self.tunnel is not None:
            self.tunnel.stop()


def serve(
    settings: Settings,
    kind: str = "none",
    on_ready: Callable[[str | None, int], None] | None = None,
) -> None:
    """Serve in this thread until a signal, behind a tunnel of ``kind`` unless ``"none"``;
    ``on_ready(public_url, port)`` once the app has started (and the tunnel is open), with
    the port bound (the real one for ``--port 0``).

    Raises :class:`TunnelError` after a clean shutdown when the tunnel cannot open.
    """
    tunnel = make_tunnel(kind)
    if tunnel is not None:
        tunnel.prepare()  # before the model is built: a missing program fails fast
    server = TunnelledServer(settings, tunnel, on_ready)
    server.run()
    if server.tunnel_error is not None:
        raise server.tunnel_error
