"""Idle sockets lock nobody out; the cap counts work in progress; ``/health`` always answers.

Raw sockets on loopback stand in for the attacker; every wait has a deadline.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from corteza.server import Settings
from corteza.server.edge.connections import GuardedH11Protocol
from corteza.server.edge.limits import uvicorn_options
from corteza.wire import PROTOCOL_VERSION, encode_batch
from tests.conftest import TINY, LiveServer, start_server, stop_server
from tests.helpers import wait_until

TOKEN = "connections-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[LiveServer]:
    extra = getattr(request, "param", {})
    live = start_server(Settings(model=TINY, seed=0, lr=1e-3, token=TOKEN, **extra))
    try:
        yield live
    finally:
        stop_server(live)


def fields(**values: object) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("server", [values], indirect=True, ids=[""])


def _port(live: LiveServer) -> int:
    return int(live.url.rsplit(":", 1)[1])


def _attack(live: LiveServer, stack: ExitStack, silent: int, half: int) -> list[socket.socket]:
    """``silent`` sockets that send nothing and ``half`` that send half a request head."""
    sockets = []
    for i in range(silent + half):
        sock = stack.enter_context(socket.create_connection(("127.0.0.1", _port(live)), 10))
        if i >= silent:
            sock.sendall(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        sockets.append(sock)
    return sockets


def _closed_by_server(sock: socket.socket, deadline: float) -> bool:
    sock.settimeout(max(deadline - time.monotonic(), 0.01))
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


def test_uvicorn_options_enforce_the_settings() -> None:
    settings = Settings(
        model=TINY,
        max_connections=7,
        ws_max_frame_mb=2,
        keep_alive_s=9,
        header_timeout_s=3,
        max_idle_per_client=5,
    )
    options = uvicorn_options(settings)
    protocol = options.pop("http")
    assert options == {"ws_max_size": 2 * 1024 * 1024, "timeout_keep_alive": 9}
    assert issubclass(protocol, GuardedH11Protocol)
    assert (protocol.header_timeout_s, protocol.max_idle_per_client) == (3, 5)


def test_sixty_three_idle_sockets_lock_nobody_out(server: LiveServer) -> None:
    with ExitStack() as stack:
        _attack(server, stack, silent=53, half=10)
        with server.http() as http:
            assert http.get("/health").status_code == 200
            assert http.get("/status", headers=AUTH).status_code == 200


@fields(header_timeout_s=0.5)
def test_sockets_that_never_finish_a_head_are_closed(server: LiveServer) -> None:
    with ExitStack() as stack:
        sockets = _attack(server, stack, silent=3, half=3)
        deadline = time.monotonic() + 30
        assert all(_closed_by_server(sock, deadline) for sock in sockets)


@fields(max_idle_per_client=4, header_timeout_s=120)
def test_a_new_connection_closes_the_oldest_idle_ones_of_its_address(server: LiveServer) -> None:
    with ExitStack() as stack:
        sockets = _attack(server, stack, silent=6, half=0)
        deadline = time.monotonic() + 30
        # The 5th and 6th connections each closed the oldest idle one of 127.0.0.1.
        assert [_closed_by_server(s, deadline) for s in sockets[:2]] == [True, True]
        soon = time.monotonic() + 0.2
        assert [_closed_by_server(s, soon) for s in sockets[2:]] == [False] * 4


@fields(max_connections=2)
def test_streams_fill_the_cap_but_health_always_answers(server: LiveServer) -> None:
    ready = threading.Barrier(3, timeout=30)
    stop = threading.Event()

    def hold_stream() -> None:
        with (
            httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as http,
            http.stream("GET", "/v1/events") as events,
        ):
            assert events.status_code == 200
            ready.wait()
            stop.wait(30)

    holders = [threading.Thread(target=hold_stream) for _ in range(2)]
    for holder in holders:
        holder.start()
    try:
        ready.wait()
        with server.http() as http:
            busy = http.get("/status", headers=AUTH)
            assert http.get("/health").status_code == 200
            assert http.get("/status").status_code == 401  # the token is checked first
    finally:
        stop.set()
        for holder in holders:
            holder.join(timeout=30)
    assert busy.status_code == 503
    assert busy.headers["retry-after"] == "1"
    assert busy.json() == {
        "status": "error",
        "error": "Server busy: 2 requests and streams in progress (--max-connections); "
        "try again shortly",
        "error_type": "server_busy",
    }


@fields(stream_idle_s=0.5)
def test_a_stream_quiet_after_its_answers_is_closed_and_its_run_freed(server: LiveServer) -> None:
    url = server.url.replace("http://", "ws://") + "/v1/train/stream"
    batch = encode_batch(
        np.zeros((2, TINY.input_dim), np.float32), np.zeros(2, np.float32), run_id="quiet", seq=0
    )
    with connect(url, additional_headers=AUTH) as ws:
        hello: dict[str, Any] = {"type": "hello", "protocol": PROTOCOL_VERSION, "run_id": "quiet"}
        ws.send(json.dumps(hello))
        assert json.loads(ws.recv(timeout=30))["type"] == "welcome"
        ws.send(batch)
        assert json.loads(ws.recv(timeout=30))["type"] == "ack"
        error = json.loads(ws.recv(timeout=30))  # nothing in flight, nothing more sent
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
    assert error["error"] == "No batch for 0.5 s: closing the idle stream"
    assert (error["error_type"], error["next_seq"]) == ("request_timeout", 1)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
    run = server.state.runs.get("quiet")
    wait_until(lambda: run is not None and not run.holders, "the idle stream to free its run")


@fields(stream_idle_s=0.5)
def test_a_stream_without_batches_is_closed(server: LiveServer) -> None:
    url = server.url.replace("http://", "ws://") + "/v1/train/stream"
    with connect(url, additional_headers=AUTH) as ws:
        hello: dict[str, Any] = {"type": "hello", "protocol": PROTOCOL_VERSION, "run_id": None}
        ws.send(json.dumps(hello))
        assert json.loads(ws.recv(timeout=30))["type"] == "welcome"
        error = json.loads(ws.recv(timeout=30))  # pings are answered; no batch comes
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
    assert error["error"] == "No batch for 0.5 s: closing the idle stream"
    assert error["error_type"] == "request_timeout"
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1000
    assert json.loads(closed.value.rcvd.reason)["error_type"] == "request_timeout"
