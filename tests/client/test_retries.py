"""Retries: idempotent calls survive 503s and refused connections; training is never retried."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from corteza.client import AsyncClient, Client, InternalServerError
from corteza.client import client as client_module

HEALTH = {"alive": True, "timestamp": "t", "uptime_seconds": 1.0}


class FlakyServer(ThreadingHTTPServer):
    """A real HTTP server on loopback answering 503 a set number of times, then 200."""

    failures_left: int
    hits: list[str]


class Handler(BaseHTTPRequestHandler):
    server: FlakyServer

    def _answer(self) -> None:
        self.server.hits.append(f"{self.command} {self.path}")
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        if self.server.failures_left > 0:
            self.server.failures_left -= 1
            status, body = 503, {"status": "error", "error": "busy", "error_type": "busy"}
        else:
            status, body = 200, HEALTH
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = _answer  # noqa: N815 - the stdlib names them so
    do_POST = _answer  # noqa: N815

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def flaky(monkeypatch: pytest.MonkeyPatch) -> Iterator[FlakyServer]:
    monkeypatch.setattr(client_module, "BACKOFF_BASE", 0.01)
    server = FlakyServer(("127.0.0.1", 0), Handler)
    server.failures_left = 0
    server.hits = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _url(server: FlakyServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def test_idempotent_calls_are_retried_through_503s(flaky: FlakyServer) -> None:
    flaky.failures_left = 2
    with Client(_url(flaky), retries=3) as client:
        assert client.health().alive
    assert flaky.hits == ["GET /health"] * 3


def test_retries_give_up_with_the_servers_error(flaky: FlakyServer) -> None:
    flaky.failures_left = 10
    with Client(_url(flaky), retries=2) as client, pytest.raises(InternalServerError) as info:
        client.health()
    assert str(info.value) == "busy"
    assert info.value.status == 503
    assert len(flaky.hits) == 3


def test_training_is_not_retried(flaky: FlakyServer) -> None:
    flaky.failures_left = 1
    with Client(_url(flaky), retries=3, check=False) as client, pytest.raises(InternalServerError):
        client.train_batch([[0.0, 1.0]], [1])
    assert flaky.hits == ["POST /train_layer2"]


def test_the_async_client_retries_by_the_same_policy(flaky: FlakyServer) -> None:
    async def scenario() -> None:
        async with AsyncClient(_url(flaky), retries=3, check=False) as client:
            assert (await client.health()).alive
            flaky.failures_left = 1
            with pytest.raises(InternalServerError):
                await client.train_batch([[0.0, 1.0]], [1])

    flaky.failures_left = 2
    asyncio.run(scenario())
    assert flaky.hits == ["GET /health"] * 3 + ["POST /train_layer2"]
