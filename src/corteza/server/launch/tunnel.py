"""Tunnels that give a loopback server a public https URL: cloudflared quick tunnels, ngrok.

A tunnel opens once the server is bound (a tunnel to a closed port is
useless) and closes when the server stops. The cloudflared process runs in
its own process group and, on Linux, receives SIGKILL when the thread that
started it ends, so it cannot outlive the server even when the server is
killed outright.

>>> tunnel = make_tunnel("cloudflared")  # doctest: +SKIP
>>> tunnel.start("http://127.0.0.1:8000")  # doctest: +SKIP
'https://some-random-words.trycloudflare.com'
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import IO, Any, NoReturn
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

TUNNEL_KINDS = ("none", "cloudflared", "ngrok")

CLOUDFLARED_DOWNLOADS = (
    "https://developers.cloudflare.com/cloudflare-one/connections/connect-networks/downloads/"
)
CLOUDFLARED_NOT_FOUND = (
    f"cloudflared not found: install it ({CLOUDFLARED_DOWNLOADS}) "
    'or `pip install "corteza[tunnel]"`'
)
NGROK_NOT_INSTALLED = 'ngrok tunnels need pyngrok: `pip install "corteza[tunnel]"`'
NGROK_NO_TOKEN = (
    "ngrok needs an auth token: set NGROK_AUTHTOKEN "
    "(https://dashboard.ngrok.com/get-started/your-authtoken) or use --tunnel cloudflared"
)
DEFAULT_URL_TIMEOUT = 30.0  # seconds for cloudflared to print its URL (usually 3-8 s)
DEFAULT_GRACE = 5.0  # seconds between SIGTERM and SIGKILL when stopping
WITHHELD_ENV = ("CORTEZA_TOKEN",)  # the server's token: not for the tunnel process

# The quick tunnel's own URL; cloudflared's errors also name api.trycloudflare.com.
QUICK_TUNNEL_URL = re.compile(r"https://(?!api\.)[a-z0-9-]+\.trycloudflare\.com")

# Run before exec: SIGKILL on the death of the starting thread (it survives exec),
# and give up when that parent is already gone. Safer than preexec_fn with threads.
_WITH_PARENT_DEATH_SIGNAL = (
    "import ctypes, os, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    os._exit(1)\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


class TunnelError(RuntimeError):
    """A tunnel that could not open; the message says what to install or set."""


class Tunnel(ABC):
    """Something that exposes a local URL on a public one."""

    name: str

    @abstractmethod
    def prepare(self) -> None:
        """Check what :meth:`start` needs, before the server starts; raise :class:`TunnelError`."""

    @abstractmethod
    def start(self, local_url: str) -> str:
        """Open a tunnel to ``local_url``; its public URL, or :class:`TunnelError`."""

    @abstractmethod
    def stop(self) -> None:
        """Close the tunnel; safe to call twice or before :meth:`start`."""


def make_tunnel(kind: str) -> Tunnel | None:
    """The tunnel for ``--tunnel KIND``; ``None`` for ``"none"``."""
    if kind == "none":
        return None
    if kind == "cloudflared":
        return CloudflaredTunnel()
    if kind == "ngrok":
        return NgrokTunnel()
    raise ValueError(f"unknown tunnel {kind!r}: choose one of {', '.join(TUNNEL_KINDS)}")


def find_quick_tunnel_url(line: str) -> str | None:
    """The ``https://<words>.trycloudflare.com`` URL in a line of cloudflared's log."""
    match = QUICK_TUNNEL_URL.search(line)
    return match.group(0) if match else None


def find_cloudflared() -> str:
    """cloudflared on PATH, else the binary pycloudflared keeps (downloaded on first use)."""
    found = shutil.which("cloudflared")
    if found is not None:
        return found
    try:
        from pycloudflared.util import download, get_info
    except ImportError:
        raise TunnelError(CLOUDFLARED_NOT_FOUND) from None
    try:
        info = get_info()
        if not Path(info.executable).exists():
            download(info)
    except (OSError, RuntimeError) as exc:
        raise TunnelError(
            f"cloudflared not found, and pycloudflared could not fetch it: {exc}"
        ) from exc
    return str(info.executable)


class CloudflaredTunnel(Tunnel):
    """A cloudflared quick tunnel: no account, a random ``trycloudflare.com`` URL."""

    name = "cloudflared"

    def __init__(
        self,
        executable: str | None = None,
        *,
        url_timeout: float = DEFAULT_URL_TIMEOUT,
        grace: float = DEFAULT_GRACE,
    ) -> None:
        self.executable = executable
        self.url_timeout = url_timeout
        self.grace = grace
        self.process: subprocess.Popen[str] | None = None
        self.public_url: str | None = None
        self._lines: collections.deque[str] = collections.deque(maxlen=20)
        self._url_seen = threading.Event()
        self._reader: threading.Thread | None = None

    def prepare(self) -> None:
        self.executable = self.executable or find_cloudflared()

    def start(self, local_url: str) -> str:
        self.prepare()
        assert self.executable is not None
        command = [self.executable, "tunnel", "--url", local_url, "--no-autoupdate"]
        if sys.platform == "linux":
            command = [sys.executable, "-c", _WITH_PARENT_DEATH_SIGNAL, str(os.getpid()), *command]
        try:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                errors="replace",
                start_new_session=True,
                env=tunnel_environment(),
            )
        except OSError as exc:
            raise TunnelError(f"cloudflared could not start: {exc}") from exc
        # Read its log for as long as it runs: a full pipe would stall the tunnel.
        assert self.process.stderr is not None
        self._reader = threading.Thread(
            target=self._read_log, args=(self.process.stderr,), name="cloudflared-log", daemon=True
        )
        self._reader.start()
        if not self._url_seen.wait(self.url_timeout) or self.public_url is None:
            self._fail()
        logger.info("cloudflared tunnel open: %s -> %s", self.public_url, local_url)
        assert self.public_url is not None
        return self.public_url

    def _read_log(self, stream: IO[str]) -> None:
        with stream:
            for raw in stream:
                line = raw.rstrip()
                self._lines.append(line)
                # Its errors (a lost connection...) matter once the tunnel is up.
                logger.log(
                    logging.WARNING if " ERR " in line else logging.DEBUG, "cloudflared: %s", line
                )
                if self.public_url is None and (url := find_quick_tunnel_url(line)):
                    self.public_url = url
                    self._url_seen.set()
        self._url_seen.set()  # the log ended: cloudflared is exiting

    def _fail(self) -> NoReturn:
        assert self.process is not None
        try:
            code = self.process.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            self.stop()
            raise TunnelError(
                f"cloudflared gave no trycloudflare.com URL within {self.url_timeout:g} s; "
                f"check that this machine reaches the internet{self._last_line()}"
            ) from None
        self.stop()
        raise TunnelError(
            f"cloudflared exited with code {code} before giving a URL{self._last_line()}"
        )

    def _last_line(self) -> str:
        return f" (last line: {self._lines[-1]})" if self._lines else ""

    def stop(self) -> None:
        """SIGTERM to its process group, SIGKILL after the grace period."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            _signal_group(process, kill=False)
            try:
                process.wait(self.grace)
            except subprocess.TimeoutExpired:
                _signal_group(process, kill=True)
                process.wait()
        if self._reader is not None:
            self._reader.join(timeout=self.grace)  # it ends at the end of the log
        logger.info("cloudflared stopped")


def tunnel_environment() -> dict[str, str]:
    """This process's environment less :data:`WITHHELD_ENV`: what the tunnel process gets.

    ``corteza serve --nproc-per-node N`` puts the server's token in the environment
    for the ranks it starts; cloudflared, which it starts too, has no use for it.
    """
    return {name: value for name, value in os.environ.items() if name not in WITHHELD_ENV}


def _signal_group(process: subprocess.Popen[str], *, kill: bool) -> None:
    """SIGTERM or SIGKILL to cloudflared's process group (Windows: terminate or kill)."""
    if sys.platform == "win32":
        if kill:
            process.kill()
        else:
            process.terminate()
        return
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(process.pid, signal.SIGKILL if kill else signal.SIGTERM)


class NgrokTunnel(Tunnel):
    """An ngrok tunnel through pyngrok; needs ``NGROK_AUTHTOKEN`` (a free account)."""

    name = "ngrok"

    def __init__(self) -> None:
        self.public_url: str | None = None
        self._config: Any = None

    def prepare(self) -> None:
        try:
            import pyngrok  # noqa: F401
        except ImportError:
            raise TunnelError(NGROK_NOT_INSTALLED) from None
        if not os.environ.get("NGROK_AUTHTOKEN"):
            raise TunnelError(NGROK_NO_TOKEN)

    def start(self, local_url: str) -> str:
        self.prepare()
        from pyngrok import conf, ngrok
        from pyngrok.exception import PyngrokError

        token = os.environ["NGROK_AUTHTOKEN"]
        self._config = conf.PyngrokConfig(auth_token=token, start_new_session=True)
        try:
            opened = ngrok.connect(
                str(urlsplit(local_url).port), "http", pyngrok_config=self._config
            )
        except (PyngrokError, OSError) as exc:
            ngrok.kill(self._config)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise TunnelError(f"ngrok failed to open a tunnel: {first}") from exc
        assert opened.public_url is not None
        self.public_url = opened.public_url
        logger.info("ngrok tunnel open: %s -> %s", self.public_url, local_url)
        return self.public_url

    def stop(self) -> None:
        config, self._config = self._config, None
        if config is None:
            return
        from pyngrok import ngrok

        ngrok.kill(config)
        logger.info("ngrok tunnel closed")
