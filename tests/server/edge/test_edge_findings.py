"""Findings of the hostile-traffic probe, one test each, against a real uvicorn with a token."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from corteza.server import Settings
from tests.conftest import TINY, LiveServer, start_server, stop_server

TOKEN = "edge-findings-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    live = start_server(Settings(model=TINY, seed=0, lr=1e-3, token=TOKEN))
    try:
        yield live
    finally:
        stop_server(live)


@pytest.fixture(scope="module")
def http(server: LiveServer) -> Iterator[httpx.Client]:
    with server.http(headers=AUTH) as client:
        yield client


def test_made_up_methods_share_one_metrics_label(server: LiveServer, http: httpx.Client) -> None:
    with server.http() as anonymous:
        for i in range(20):
            method = f"X{i:02d}" + "M" * 2000
            assert anonymous.request(method, "/status").status_code == 401
    text = http.get("/metrics").text
    assert "MMMM" not in text
    line = 'corteza_http_requests_total{method="OTHER",route="unmatched",status="401"} 20.0'
    assert line in text.splitlines()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"\xb2", "Last-Event-ID must be a non-negative integer, got '\u00b2'"),  # '²'.isdigit()
        (b"\xd9\xa3", "Last-Event-ID must be a non-negative integer, got '\u00d9\u00a3'"),
        (b"7" * 5000, "Last-Event-ID must have at most 20 digits, got 5000"),
    ],
    ids=["superscript-two", "arabic-digit-bytes", "5000-digits"],
)
def test_a_last_event_id_that_int_refuses_is_a_422(
    http: httpx.Client, value: bytes, message: str
) -> None:
    answer = http.get("/v1/events", headers={b"Last-Event-ID": value})
    assert answer.status_code == 422
    assert answer.json() == {"status": "error", "error": message, "error_type": "invalid_request"}


@pytest.mark.parametrize("path", ["/train_layer2", "/v1/predict"])
def test_a_client_that_leaves_mid_body_is_one_warning(
    server: LiveServer, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    caplog.set_level(logging.WARNING)
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n".encode()
            + b'{"samples": [' * 10
        )
    deadline = time.monotonic() + 30
    while not [r for r in caplog.records if r.levelno >= logging.WARNING]:
        assert time.monotonic() < deadline, "the server logged nothing"
        time.sleep(0.05)
    time.sleep(0.2)  # anything else it logs for this request comes now
    records = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [(r.levelname, r.getMessage(), r.exc_info) for r in records] == [
        ("WARNING", f"client left before its request body was read: POST {path}", None)
    ]
