"""The server in a background thread, for Jupyter and Colab: the cell returns, the server runs.

>>> server = serve_in_background(tunnel="cloudflared")  # doctest: +SKIP
>>> print(server.connect_command)  # doctest: +SKIP
corteza connect https://some-random-words.trycloudflare.com --token ...
>>> server.stop()  # doctest: +SKIP
"""

from __future__ import annotations

import html
import logging
import os
import socket
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from corteza.model import PRESETS
from corteza.server.edge.policy import (
    allows_any_page,
    connect_command,
    dashboard_url,
    resolve_token,
)
from corteza.server.launch.server import TunnelledServer
from corteza.server.launch.tunnel import make_tunnel
from corteza.server.settings import Settings

logger = logging.getLogger(__name__)

DEFAULT_START_TIMEOUT = 300.0  # seconds: torch import, the 73.8M model, resuming, the tunnel
DEFAULT_STOP_TIMEOUT = 120.0  # seconds: the final checkpoint of the default model takes ~5 s


class ServerStartError(RuntimeError):
    """The server did not start; the message says why."""


class BackgroundServer:
    """A running server: where to reach it, what to paste on the PC, and ``stop()``.

    Also a context manager: ``with serve_in_background(...) as server:`` stops on exit.
    """

    def __init__(
        self, server: TunnelledServer, thread: threading.Thread, settings: Settings
    ) -> None:
        self._server = server
        self._thread = thread
        self.settings = settings
        self.local_url = server.local_url
        self.public_url = server.public_url
        self.token: str | None = settings.token

    @property
    def url(self) -> str:
        """The public URL when tunnelled, else the local one."""
        return self.public_url or self.local_url

    @property
    def dashboard_url(self) -> str:
        """The dashboard; the token rides in the fragment, which browsers never send."""
        return dashboard_url(self.url, self.token)

    @property
    def connect_command(self) -> str:
        """What to paste into a terminal on the PC."""
        return connect_command(self.url, self.token)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """Shut down cleanly: a final checkpoint when ``checkpoint_dir`` is set, then the tunnel."""
        if not self._thread.is_alive():
            return
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"the server did not stop within {timeout:g} s")
        logger.info("corteza server at %s stopped", self.local_url)

    def __enter__(self) -> BackgroundServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        if not self.running:
            return f"<corteza server at {self.url}, stopped>"
        return f"<corteza server at {self.url}; on your PC: {self.connect_command}>"

    def _repr_html_(self) -> str:
        url = html.escape(self.url)
        if not self.running:
            return f"<p>corteza server at <code>{url}</code>, stopped</p>"
        dashboard = html.escape(self.dashboard_url)
        return (
            f"<p>corteza server running at <a href='{url}' target='_blank'>{url}</a><br>"
            f"Dashboard: <a href='{dashboard}' target='_blank'>{dashboard}</a><br>"
            f"On your PC: <code>{html.escape(self.connect_command)}</code></p>"
        )


def serve_in_background(
    *,
    port: int | None = None,
    host: str = "127.0.0.1",
    tunnel: str = "none",
    token: str | None = None,
    checkpoint_dir: str | Path | None = None,
    preset: str = "default",
    start_timeout: float = DEFAULT_START_TIMEOUT,
    **settings_overrides: Any,
) -> BackgroundServer:
    """Start the server in a daemon thread and return once it answers (and its tunnel is open).

    ``port=None`` takes a free one. ``tunnel`` is ``"none"``, ``"cloudflared"`` or
    ``"ngrok"``; a tunnel requires a token, one is generated when none is given.
    Other keyword arguments are :class:`Settings` fields. Raises ``ValueError``
    for impossible settings, :class:`TunnelError` when the tunnel cannot open and
    :class:`ServerStartError` when the server cannot start.
    """
    opener = make_tunnel(tunnel)
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    any_page = allows_any_page(settings_overrides.get("cors_origins", ()))
    token = resolve_token(
        host, tunnel=opener is not None, token=token, no_auth=False, any_page=any_page
    )
    if opener is not None:
        opener.prepare()  # before the model is built: a missing program fails fast
    fields: dict[str, Any] = {"model": PRESETS[preset], **settings_overrides}
    settings = Settings(
        host=host,
        port=port or 0,
        token=token,
        public=opener is not None,
        checkpoint_dir=checkpoint_dir,
        **fields,
    )
    sock = _listen(host, port or 0)
    settings.port = sock.getsockname()[1]
    try:
        server = TunnelledServer(settings, opener, access_log=False)
    except BaseException:
        sock.close()
        raise
    failures = _StartupFailures()
    logging.getLogger("uvicorn.error").addHandler(failures)
    thread = threading.Thread(
        target=_run, args=(server, sock), name=f"corteza-server-{settings.port}", daemon=True
    )
    try:
        thread.start()
        _wait_ready(server, thread, start_timeout)
    finally:
        logging.getLogger("uvicorn.error").removeHandler(failures)
    if server.tunnel_error is not None:
        thread.join(DEFAULT_STOP_TIMEOUT)
        raise server.tunnel_error
    if not server.started:
        thread.join(DEFAULT_STOP_TIMEOUT)
        raise ServerStartError(f"the server did not start: {failures.reason()}")
    logger.info("corteza server on %s", server.public_url or server.local_url)
    return BackgroundServer(server, thread, settings)


def _listen(host: str, port: int) -> socket.socket:
    """Bind here, so a taken port fails in the caller with the OS's words."""
    try:
        return socket.create_server((host, port))
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ServerStartError(f"cannot listen on {host}:{port}: {reason}") from exc


def _run(server: TunnelledServer, sock: socket.socket) -> None:
    try:
        server.run([sock])
    except SystemExit:  # uvicorn's way to say the start-up failed; the log says why
        pass
    finally:
        sock.close()
        server.ready.set()


def _wait_ready(server: TunnelledServer, thread: threading.Thread, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not server.ready.wait(0.05):
        if time.monotonic() > deadline:
            server.should_exit = True
            thread.join(DEFAULT_STOP_TIMEOUT)
            raise ServerStartError(f"the server did not start within {timeout:g} s")


class _StartupFailures(logging.Handler):
    """Keeps what uvicorn logged as errors while the server started."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def reason(self) -> str:
        """The first error's last line: Starlette logs the lifespan's traceback as text."""
        for record in self.records:
            if record.exc_info and record.exc_info[1] is not None:
                exc = record.exc_info[1]
                return f"{type(exc).__name__}: {exc}"
            lines = [line for line in record.getMessage().splitlines() if line.strip()]
            if lines:
                return lines[-1].strip()
        return "see the log above"
