"""A real 2-rank server: ``corteza serve --nproc-per-node 2`` (torchrun, gloo on the CPU)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from corteza.client import free_port

RANKS = 2
WEIGHTS = re.compile(r"rank (\d+) stops at step (\d+), weights ([0-9a-f]{64})")


class Cluster:
    """``corteza serve --nproc-per-node 2 --preset tiny`` (or ``ranks``) on a free port, its
    log in a file."""

    def __init__(
        self,
        tmp: Path,
        *extra: str,
        name: str = "server",
        env: dict[str, str] | None = None,
        ranks: int = RANKS,
        device: str = "cpu",
        precision: str = "fp32",
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / f"{name}.log"
        self.args = [
            sys.executable,
            "-m",
            "corteza",
            "serve",
            "--nproc-per-node",
            str(ranks),
            "--preset",
            "tiny",
            "--dropout",
            "0",
            "--precision",
            precision,
            "--device",
            device,
            "--port",
            str(self.port),
            "--log-level",
            "info",
            *extra,
        ]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )

    def token(self) -> str:
        """The token the banner printed."""
        found = re.search(r"^token: (\S+)$", self.text(), re.MULTILINE)
        assert found, self.text()[-2000:]
        return found[1]

    def wait_healthy(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.text()[-3000:]
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"the 2-rank server did not answer /health:\n{self.text()[-3000:]}")

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM to the launcher, as Ctrl-C or a service manager would; its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)

    def digests(self) -> dict[int, tuple[int, str]]:
        """Each rank's last ``(step, weights sha256)`` as it logged them when stopping."""
        return {int(m[0]): (int(m[1]), m[2]) for m in WEIGHTS.findall(self.text())}

    def rank_pids(self) -> dict[int, int]:
        """Live ranks' pids by rank, read from /proc (the launcher's children)."""
        ranks: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                environ = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            if parent != self.process.pid:
                continue
            for item in environ:
                if item.startswith(b"RANK="):
                    ranks[int(item[5:])] = int(entry.name)
        return ranks


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"
