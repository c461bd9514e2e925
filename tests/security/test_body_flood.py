"""Many oversized bodies at once: the server's memory stays bounded.

Each client streams a chunked body (no Content-Length, so only counting can stop it) 16
times the cap; the server must cut every one off near the cap instead of holding them.
The server runs in this process, so its resident memory is this process's.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from corteza.server import Settings
from tests.conftest import TINY, LiveServer, start_server, stop_server
from tests.security.conftest import TOKEN

CAP_MB = 1
CLIENTS = 16
BODY_MB = 16 * CAP_MB
CHUNK = b"x" * (64 * 1024)
MB = 1024 * 1024


@pytest.fixture(scope="module")
def capped_server() -> Iterator[LiveServer]:
    live = start_server(Settings(model=TINY, token=TOKEN, max_body_mb=CAP_MB))
    try:
        yield live
    finally:
        stop_server(live)


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _flood(port: int) -> str:
    """Stream a chunked body of BODY_MB; the server's status line, or how it cut us off."""
    head = (
        f"POST /train_layer2 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    )
    frame = f"{len(CHUNK):x}\r\n".encode() + CHUNK + b"\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        try:
            sock.sendall(head.encode())
            for _ in range(BODY_MB * MB // len(CHUNK)):
                sock.sendall(frame)
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server answered and closed while the body was still coming
        try:
            status = sock.recv(64).split(b"\r\n", 1)[0].decode()
        except OSError as exc:
            return type(exc).__name__
    return status or "closed"


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_concurrent_oversized_bodies_keep_memory_bounded(
    capped_server: LiveServer, figure: Callable[[str], None]
) -> None:
    port = int(capped_server.url.rsplit(":", 1)[1])
    baseline = peak = _rss()
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with ThreadPoolExecutor(CLIENTS) as pool:
        outcomes = list(pool.map(_flood, [port] * CLIENTS))
    done.set()
    sampler.join()
    growth = (peak - baseline) / MB
    refused = sum(o.startswith("HTTP/1.1 413 ") for o in outcomes)
    figure(
        f"body-flood: clients={CLIENTS} offered_mb={CLIENTS * BODY_MB} "
        f"refused_413={refused} rss_growth_mb={growth:.1f}"
    )
    assert refused > 0
    cut_off = ("HTTP/1.1 413 ", "closed", "ConnectionResetError", "BrokenPipeError")
    assert all(o.startswith(cut_off) for o in outcomes), outcomes
    assert growth < CLIENTS * BODY_MB / 4  # a server that kept the bodies would grow by all
