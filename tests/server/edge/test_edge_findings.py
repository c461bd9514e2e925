"""Findings of the hostile-traffic probe, one test each, against a real uvicorn with a token."""

from __future__ import annotations

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
