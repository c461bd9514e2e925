"""An embedded local server: a ``corteza serve`` subprocess on 127.0.0.1.

Used by ``corteza demo`` and ``corteza train`` when no server is configured.
The client side never imports the server; it starts it as a process.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import httpx

from corteza.client.errors import ConnectError

logger = logging.getLogger(__name__)

DEFAULT_START_TIMEOUT = 180.0  # seconds; importing torch and building 73.8M parameters

# On Linux the server is told SIGTERM when the thread that started it dies, even by
# SIGKILL (the setting survives exec), and gives up when that parent is already gone:
# a killed `corteza train` leaves no server holding its port.
_WITH_PARENT_DEATH_SIGNAL = (
    "import ctypes, os, runpy, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, 15)  # PR_SET_PDEATHSIG, SIGTERM\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    os._exit(1)\n"
    "sys.argv = ['corteza', *sys.argv[2:]]\n"
    "runpy.run_module('corteza', run_name='__main__', alter_sys=True)\n"
)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class LocalServer:
    """Starts ``python -m corteza serve`` on a free loopback port; stops it on exit.

    >>> with LocalServer(["--preset", "tiny"]) as server:  # doctest: +SKIP
    ...     Client(server.url).health()
    """

    def __init__(
        self,
        serve_args: list[str] | None = None,
        *,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        python: str = sys.executable,
    ) -> None:
        self.serve_args = serve_args or []
        self.start_timeout = start_timeout
        self.python = python
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None
        self._log_dir = tempfile.TemporaryDirectory(prefix="corteza-local-")
        self.log_path = Path(self._log_dir.name) / "server.log"

    def start(self) -> LocalServer:
        launcher = ["-m", "corteza"]
        if sys.platform == "linux":
            launcher = ["-c", _WITH_PARENT_DEATH_SIGNAL, str(os.getpid())]
        command = [
            self.python,
            *launcher,
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *self.serve_args,
        ]
        logger.info("starting local server: %s", " ".join(command))
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise ConnectError(
                    f"the local server exited with code {self._process.returncode}:\n"
                    f"{self.log_tail()}"
                )
            try:
                if httpx.get(f"{self.url}/health", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise ConnectError(
            f"the local server did not answer within {self.start_timeout:.0f}s:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL if it does not stop in ``timeout`` seconds."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._log_dir.cleanup()

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
