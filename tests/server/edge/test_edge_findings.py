"""Findings of the hostile-traffic probe, one test each, against a real uvicorn with a token."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from corteza.server import Settings
from corteza.server.edge.errors import ApiError
from corteza.server.edge.json_batches import read_predict_request, read_train_request
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


PEAK_SCRIPT = """
import json, resource, sys
from corteza.server import Settings
from corteza.server.edge.errors import ApiError
from corteza.server.edge.json_batches import read_predict_request
from corteza.wire.model_config import ModelConfig
body = json.dumps({"inputs": [[0] * 32] * int(sys.argv[1])}).encode()
settings = Settings(model=ModelConfig.tiny())
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    read_predict_request(body, settings)
except ApiError as exc:
    print(exc.status, end=" ")
print(len(body), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


def json_peak_rss_mb(rows: int) -> tuple[int, float, float]:
    """Status, body MB and peak RSS growth MB of reading ``rows`` integer rows, in a fresh
    process (pydantic-core allocates outside tracemalloc's view)."""
    out = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, str(rows)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout.split()
    status = int(out[0]) if len(out) == 3 else 200
    return status, int(out[-2]) / 2**20, int(out[-1]) / 1024


def test_json_rows_are_counted_before_pydantic_builds_them() -> None:
    """Integer rows sent pydantic's smart union through its strict pass: about 150 bytes
    held per byte of body. Counted first, a body over the row cap costs a few times its size."""
    settings = Settings(model=TINY, max_batch_samples=4096)
    body = json.dumps({"inputs": [[0] * TINY.input_dim] * 50_000}).encode()
    with pytest.raises(ApiError) as refused:
        read_predict_request(body, settings)
    assert (refused.value.status, refused.value.message) == (
        413,
        "Batch too large: 50000 samples; this server takes at most 4096 per batch "
        "(--max-batch-samples)",
    )
    status, body_mb, held = json_peak_rss_mb(100_000)
    assert status == 413
    assert held < 10 * body_mb, f"{held:.0f} MB held for a {body_mb:.1f} MB body"
    train = json.dumps(
        {"samples": [{"input_data": [0] * TINY.input_dim, "anomaly_label": 0}] * 5000}
    ).encode()
    with pytest.raises(ApiError) as too_many:
        read_train_request(train, settings)
    assert too_many.value.message.startswith("Batch too large: 5000 samples")


def test_integer_rows_train_and_predict_as_floats(http: httpx.Client) -> None:
    rows = [[i % 3 for i in range(TINY.input_dim)]] * 4
    predicted = http.post("/v1/predict", json={"inputs": rows})
    assert predicted.status_code == 200 and predicted.json()["count"] == 4
    samples = [{"input_data": row, "anomaly_label": k % 2} for k, row in enumerate(rows)]
    assert http.post("/train_layer2", json={"samples": samples}).status_code == 200


def test_json_sequences_are_counted_by_their_steps(http: httpx.Client) -> None:
    steps = [[[0.5] * TINY.input_dim] * 1025]
    answer = http.post("/v1/predict", json={"inputs": steps})
    assert answer.status_code == 413
    assert answer.json()["error"] == (
        "Sequence too long: 1025 time steps; this server takes at most 1024 (--max-seq-len)"
    )


def test_an_https_origin_is_not_same_origin_on_an_http_server(
    server: LiveServer, http: httpx.Client
) -> None:
    netloc = server.url.removeprefix("http://")
    assert http.get("/status", headers={"Origin": f"http://{netloc}"}).status_code == 200
    refused = http.get("/status", headers={"Origin": f"https://{netloc}"})
    assert refused.status_code == 403
    assert refused.json()["error"] == (
        f"Origin https://{netloc} may not call this server; start it with "
        f"--cors-origin https://{netloc} to allow that web page"
    )


def test_behind_a_tunnel_https_pages_of_the_host_are_same_origin() -> None:
    from corteza.server.edge.security import origin_allowed

    public = Settings(model=TINY, token=TOKEN, public=True, host="0.0.0.0")
    assert origin_allowed("https://a.trycloudflare.com", "a.trycloudflare.com", public)
    assert not origin_allowed("https://a.trycloudflare.com", "b.trycloudflare.com", public)
    private = Settings(model=TINY, token=TOKEN)
    assert not origin_allowed("https://127.0.0.1:8000", "127.0.0.1:8000", private)
    assert origin_allowed("https://127.0.0.1:8000", "127.0.0.1:8000", private, "https")
    assert origin_allowed("http://127.0.0.1:8000", "127.0.0.1:8000", private, "ws")


@pytest.mark.parametrize("host", ["[::1]evil.com", "[::1]:80evil", "[::1]:"])
def test_garbage_after_a_bracketed_host_is_refused(http: httpx.Client, host: str) -> None:
    answer = http.get("/status", headers={"Host": host})
    assert answer.status_code == 400
    assert answer.json()["error"] == (
        f"Host {host} is not served here (DNS rebinding guard); "
        f"start the server with --allowed-host {host} to allow it"
    )
