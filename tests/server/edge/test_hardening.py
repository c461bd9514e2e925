"""Host allow-list, Origin check, CORS, body caps and timeouts, batch limits, no tracebacks.

Raw sockets stand in for hostile clients where httpx would behave (a declared
size it never sends, a chunked body that does not stop, a byte a second).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pytest
from starlette.types import Message, Receive, Scope, Send
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from corteza.client.errors import (
    ForbiddenError,
    InvalidRequestError,
    PayloadTooLargeError,
    RequestTimeoutError,
    UnauthorizedError,
    parse_error,
)
from corteza.server import Settings
from corteza.server.edge.limits import BodyLimitMiddleware
from corteza.wire import encode_batch
from tests.conftest import TINY, LiveServer, start_server, stop_server
from tests.helpers import assert_same_model, samples, snapshot_model

TOKEN = "hardening-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FEEDBACK = {"ajustes_aplicados": [0.0] * 16, "validacion": False, "timestamp": "t"}


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[LiveServer]:
    """A tiny-model server with the token, plus the Settings fields given by ``fields(...)``."""
    extra = getattr(request, "param", {})
    live = start_server(Settings(model=TINY, seed=0, lr=1e-3, token=TOKEN, **extra))
    try:
        yield live
    finally:
        stop_server(live)


def fields(**values: object) -> pytest.MarkDecorator:
    """Run the test against a server with these Settings fields."""
    return pytest.mark.parametrize("server", [values], indirect=True, ids=[""])


def _port(live: LiveServer) -> int:
    return int(live.url.rsplit(":", 1)[1])


@dataclass
class Answer:
    """What a raw client got back."""

    status: int
    headers: dict[str, str]
    body: dict[str, object]
    closed: bool  # the server closed the connection after answering
    sent: int  # body bytes the client managed to send


def exchange(
    live: LiveServer, head: str, chunks: Iterable[bytes] = (), pause: float = 0.0
) -> Answer:
    """Send ``head`` then ``chunks`` (``pause`` s apart) while reading; stop once answered."""
    sock = socket.create_connection(("127.0.0.1", _port(live)))
    received = bytearray()
    answered = threading.Event()
    closed = threading.Event()

    def read() -> None:
        while True:
            try:
                data = sock.recv(65536)
            except OSError:  # reset after the answer: still closed
                data = b""
            if not data:
                closed.set()
                answered.set()
                return
            received.extend(data)
            if b"\r\n\r\n" in received:
                answered.set()

    reader = threading.Thread(target=read, daemon=True)
    sent = 0
    with sock:
        sock.sendall(head.encode())
        reader.start()
        for chunk in chunks:
            if answered.wait(pause):
                break
            try:
                sock.sendall(chunk)
            except OSError:  # the server closed while we were still sending
                break
            sent += len(chunk)
        answered.wait(30)
        closed.wait(2)  # a refusal closes at once; a kept-alive connection stays open
        server_closed = closed.is_set()
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)  # ends the reader
        reader.join(10)
    raw_head, _, raw_body = bytes(received).partition(b"\r\n\r\n")
    status_line, *header_lines = raw_head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in header_lines)
    length = int(headers.get("content-length", len(raw_body)))
    return Answer(
        status=int(status_line.split()[1]),
        headers=headers,
        body=json.loads(raw_body[:length]),
        closed=server_closed,
        sent=sent,
    )


def _head(path: str, extra: str = "", *, auth: bool = True) -> str:
    token = f"Authorization: Bearer {TOKEN}\r\n" if auth else ""
    return f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{token}{extra}\r\n"


# ------------------------------------------------------------------ Host and Origin


def test_a_spoofed_host_is_refused(server: LiveServer) -> None:
    with server.http() as http:
        response = http.get("/health", headers={"Host": "evil.example:8000"})
    assert response.status_code == 400
    assert response.json() == {
        "status": "error",
        "error": "Host evil.example is not served here (DNS rebinding guard); "
        "start the server with --allowed-host evil.example to allow it",
        "error_type": "invalid_host",
    }
    assert response.headers["x-corteza-protocol"] == "1.0"


@fields(allowed_hosts=["box.lan", "*.trycloudflare.com"])
@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("127.0.0.1", 200),
        ("localhost:1234", 200),
        ("[::1]:8000", 200),
        ("BOX.lan", 200),
        ("a-b-c.trycloudflare.com", 200),
        ("trycloudflare.com", 400),
        ("box.lan.evil.example", 400),
        ("192.168.1.7", 400),
    ],
)
def test_the_allow_list(server: LiveServer, host: str, status: int) -> None:
    with server.http() as http:
        assert http.get("/health", headers={"Host": host}).status_code == status


def test_a_host_added_after_start_is_served(server: LiveServer) -> None:
    """A tunnel learns its hostname once open and adds it to the running server's list."""
    with server.http() as http:
        assert http.get("/health", headers={"Host": "x.ngrok.app"}).status_code == 400
        server.app.state.settings.allowed_hosts.append("x.ngrok.app")
        assert http.get("/health", headers={"Host": "x.ngrok.app"}).status_code == 200


@fields(host="0.0.0.0")
def test_a_wildcard_bind_serves_any_address_but_no_foreign_name(server: LiveServer) -> None:
    """A LAN user reaches it by address; a rebinding page always sends its own name."""
    with server.http() as http:
        assert http.get("/health", headers={"Host": "192.168.1.7:8000"}).status_code == 200
        assert http.get("/health", headers={"Host": "[fe80::1]:8000"}).status_code == 200
        assert http.get("/health", headers={"Host": "attacker.example"}).status_code == 400


def test_a_foreign_origin_is_refused_and_nothing_changes(server: LiveServer) -> None:
    before = snapshot_model(server.state)
    with server.http(headers=AUTH) as http:
        response = http.post(
            "/train_layer2",
            json={"samples": samples(2, 32)},
            headers={"Origin": "http://evil.example"},
        )
    assert response.status_code == 403
    assert response.json() == {
        "status": "error",
        "error": "Origin http://evil.example may not call this server; start it with "
        "--cors-origin http://evil.example to allow that web page",
        "error_type": "forbidden_origin",
    }
    assert "access-control-allow-origin" not in response.headers
    assert_same_model(before, snapshot_model(server.state))


@pytest.mark.parametrize(
    ("origin", "status"),
    [("same", 200), ("null", 403), ("http://127.0.0.1:1", 403), ("https://same", 403)],
)
def test_same_origin_passes(server: LiveServer, origin: str, status: int) -> None:
    netloc = server.url.removeprefix("http://")
    origin = {"same": server.url, "https://same": f"https://{netloc}:1"}.get(origin, origin)
    with server.http(headers=AUTH) as http:
        assert http.get("/status", headers={"Origin": origin}).status_code == status


@fields(cors_origins=["https://app.example"])
def test_a_listed_origin_gets_cors_headers(server: LiveServer) -> None:
    origin = {"Origin": "https://app.example"}
    with server.http() as http:
        response = http.get("/status", headers={**AUTH, **origin})
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "https://app.example"
        preflight = http.options(
            "/train_layer2",
            headers={
                **origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )  # a browser sends no token on a preflight
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        allowed = preflight.headers["access-control-allow-headers"].lower()
        assert "authorization" in allowed and "content-type" in allowed
        other = http.get("/status", headers={**AUTH, "Origin": "https://other.example"})
        assert other.status_code == 403


def test_no_cors_headers_by_default(server: LiveServer) -> None:
    with server.http(headers=AUTH) as http:
        response = http.get("/status", headers={"Origin": server.url})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


def test_the_stream_refuses_a_foreign_origin(server: LiveServer) -> None:
    url = server.url.replace("http://", "ws://") + "/v1/train/stream"
    with pytest.raises(InvalidStatus) as caught:
        connect(url, additional_headers={**AUTH, "Origin": "http://evil.example"}).close()
    assert caught.value.response.status_code == 403


# ------------------------------------------------------------------ body size


TOO_LARGE_BATCH = "Request body too large: this route takes at most 1 MB (--max-body-mb)"
TOO_LARGE_SMALL = "Request body too large: this route takes at most 64 KB (--max-small-body-kb)"


@fields(max_body_mb=1, max_small_body_kb=64)
@pytest.mark.parametrize(
    ("path", "declared", "message"),
    [
        ("/train_layer2", 1024 * 1024 + 1, TOO_LARGE_BATCH),
        ("/v1/predict", 10**12, TOO_LARGE_BATCH),
        ("/v1/checkpoint/uploads/0123/model.safetensors", 2 * 1024 * 1024, TOO_LARGE_BATCH),
        ("/feedback_dendritas", 64 * 1024 + 1, TOO_LARGE_SMALL),
        ("/no/such/route", 10**9, TOO_LARGE_SMALL),
    ],
)
def test_a_declared_length_over_the_cap_is_refused_unread(
    server: LiveServer, path: str, declared: int, message: str
) -> None:
    """The answer comes before a single body byte is sent, and the connection closes."""
    answer = exchange(server, _head(path, f"Content-Length: {declared}\r\n"))
    assert answer.status == 413
    assert answer.body == {"status": "error", "error": message, "error_type": "payload_too_large"}
    assert answer.closed
    assert answer.headers["x-corteza-protocol"] == "1.0"


@fields(max_body_mb=1)
def test_a_body_at_the_cap_passes(server: LiveServer) -> None:
    body = json.dumps({"samples": samples(2, 32)}).encode()
    body += b" " * (1024 * 1024 - len(body))
    with server.http(headers=AUTH) as http:
        response = http.post(
            "/train_layer2", content=body, headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 200


def peak_allocation_growth_mb(action: Callable[[], object]) -> float:
    """Peak of the Python memory this process (server thread included) allocated during
    ``action``, above its level before: what the server held of a body, in bytes counted by
    tracemalloc rather than a noisy RSS."""
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        action()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return (peak - before) / 2**20


def _chunked(total_mb: int, chunk: bytes = b"x" * 65536) -> Iterator[bytes]:
    framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    for _ in range(total_mb * 1024 * 1024 // len(chunk)):
        yield framed
    yield b"0\r\n\r\n"


@fields(max_body_mb=2)
def test_a_chunked_body_over_the_cap_is_cut_off_and_never_held(
    server: LiveServer, figure: Callable[[str], None]
) -> None:
    """256 MB offered without a length: 413 near 2 MB, and memory stays flat.

    The control sends 32 MB under a raised cap, so the same measurement shows
    what holding a body costs (Starlette gathers it before JSON parsing).
    """
    head = _head("/train_layer2", "Transfer-Encoding: chunked\r\n")
    answers: list[Answer] = []
    growth = peak_allocation_growth_mb(
        lambda: answers.append(exchange(server, head, _chunked(256)))
    )
    (answer,) = answers
    assert answer.status == 413
    assert answer.body["error"] == (
        "Request body too large: this route takes at most 2 MB (--max-body-mb)"
    )
    assert answer.closed
    assert answer.sent < 32 * 1024 * 1024  # the server stopped reading early (socket buffers)
    assert growth < 16, f"{growth:.1f} MB held at once"

    server.app.state.settings.max_body_mb = 64
    control = peak_allocation_growth_mb(
        lambda: answers.append(exchange(server, head, _chunked(32)))
    )
    assert answers[-1].status == 400  # held in full, then refused as JSON
    figure(f"body-cap: held_mb={growth:.1f} (256 MB offered, cap 2) control_held_mb={control:.1f}")
    assert control >= 32, f"the control held only {control:.1f} MB at once"


# ------------------------------------------------------------------ body speed


SLOW = (
    "Request body too slow: the server waits at most 1 s for more data and needs 16 KB/s on average"
)


@fields(body_timeout_s=1.0)
def test_a_trickled_body_is_cut_off_with_408(server: LiveServer) -> None:
    before = snapshot_model(server.state)
    head = _head("/feedback_dendritas", "Content-Type: application/json\r\nContent-Length: 200\r\n")
    answer = exchange(server, head, [b"{"] * 60, pause=1.0)  # a byte a second
    assert answer.status == 408
    assert answer.body == {"status": "error", "error": SLOW, "error_type": "request_timeout"}
    assert answer.closed
    assert answer.sent <= 4  # cut off after a few of its 60 bytes
    assert_same_model(before, snapshot_model(server.state))


@fields(body_timeout_s=1.0)
def test_a_stalled_batch_upload_is_cut_off_with_408(server: LiveServer) -> None:
    head = _head("/train_layer2", "Content-Length: 1000000\r\n")
    answer = exchange(server, head, [b"x" * 1000], pause=30)  # silent for 30 s first
    assert answer.status == 408
    assert answer.closed
    assert answer.sent == 0  # refused during the silence, not after it


@fields(body_timeout_s=1.0)
def test_a_slow_but_steady_body_is_not_cut_off(server: LiveServer) -> None:
    """Over body_timeout_s in total, but never silent for long and fast enough on average."""
    chunk = b"x" * 64 * 1024
    head = _head("/train_layer2", f"Content-Length: {6 * len(chunk)}\r\n")
    answer = exchange(server, head, [chunk] * 6, pause=0.4)  # 2.4 s in all, over the 1 s
    assert answer.sent == 6 * len(chunk)
    assert answer.status == 400  # the body arrived in full: then refused as invalid JSON
    assert answer.body["error_type"] == "malformed_body"


def test_a_bodiless_request_read_late_is_not_timed() -> None:
    """A GET whose route reads its (empty) body only after body_timeout_s, as the ONNX
    export does once the export is ready, is served: a request without a body is not timed."""

    async def late_reader(scope: Scope, receive: Receive, send: Send) -> None:
        await asyncio.sleep(1.5)
        message = await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": message["type"].encode()})

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/v1/export/onnx", "headers": []}
    guard = BodyLimitMiddleware(late_reader, Settings(body_timeout_s=1.0))
    asyncio.run(guard(scope, receive, send))
    assert [sent[0]["status"], sent[1]["body"]] == [200, b"http.request"]


# ------------------------------------------------------------------ batch shape


@fields(max_batch_samples=4, max_seq_len=3)
def test_batches_over_the_limits_are_refused_and_the_model_untouched(
    server: LiveServer,
) -> None:
    before = snapshot_model(server.state)
    too_many = {"samples": samples(5, 32)}
    too_long = {"samples": [{"input_data": [[0.1] * 32] * 4, "anomaly_label": 0}]}
    binary = encode_batch(np.zeros((5, 32), np.float32), np.zeros(5, np.float32))
    with server.http(headers=AUTH) as http:
        answers = [
            http.post("/train_layer2", json=too_many),
            http.post(
                "/train_layer2",
                content=binary,
                headers={"Content-Type": "application/x-corteza-batch"},
            ),
            http.post("/v1/predict", json={"inputs": [[0.0] * 32] * 5}),
            http.post("/train_layer2", json=too_long),
            http.post("/v1/predict", json={"inputs": [[[0.0] * 32] * 4]}),
        ]
        assert http.post("/train_layer2", json={"samples": samples(4, 32)}).status_code == 200
    many = "Batch too large: 5 samples; this server takes at most 4 per batch (--max-batch-samples)"
    long = "Sequence too long: 4 time steps; this server takes at most 3 (--max-seq-len)"
    expected = [(many, "batch_too_large")] * 3 + [(long, "sequence_too_long")] * 2
    for response, (message, error_type) in zip(answers, expected, strict=True):
        assert response.status_code == 413
        assert response.json() == {"status": "error", "error": message, "error_type": error_type}
    after = snapshot_model(server.state)
    assert after["stats"][1] == before["stats"][1] + 1  # only the batch within the limits


@fields(max_batch_samples=4)
def test_the_stream_refuses_an_oversized_frame(server: LiveServer) -> None:
    url = server.url.replace("http://", "ws://") + "/v1/train/stream"
    with connect(url, additional_headers=AUTH, open_timeout=10) as ws:
        ws.send(json.dumps({"type": "hello", "protocol": "1.0", "run_id": None}))
        welcome = json.loads(ws.recv(timeout=10))
        frame = encode_batch(
            np.zeros((5, 32), np.float32),
            np.zeros(5, np.float32),
            run_id=welcome["run_id"],
            seq=0,
        )
        ws.send(frame)
        error = json.loads(ws.recv(timeout=10))
    assert error["type"] == "error"
    assert error["error_type"] == "batch_too_large"
    assert error["error"].startswith("Batch too large: 5 samples")


# ------------------------------------------------------------------ the rest


@fields(body_timeout_s=1.0)
def test_a_long_answer_outlives_the_body_timeout(server: LiveServer) -> None:
    """Once the body is in, the guard steps aside: an event stream waits for the client."""
    request = f"GET /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    with socket.create_connection(("127.0.0.1", _port(server))) as sock:
        sock.sendall(request.encode())
        sock.settimeout(10)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        time.sleep(2.5)
        sock.settimeout(0.5)
        try:
            later = sock.recv(65536)
        except TimeoutError:  # nothing new, and still open
            later = b"(open)"
    assert later
    assert b"request_timeout" not in later


@pytest.mark.parametrize(
    ("status", "error_type", "cls"),
    [
        (401, "unauthorized", UnauthorizedError),
        (400, "invalid_host", ForbiddenError),
        (403, "forbidden_origin", ForbiddenError),
        (408, "request_timeout", RequestTimeoutError),
        (413, "payload_too_large", PayloadTooLargeError),
        (413, "batch_too_large", PayloadTooLargeError),
        (413, "sequence_too_long", PayloadTooLargeError),
    ],
)
def test_the_client_maps_each_refusal_to_its_class(
    status: int, error_type: str, cls: type[InvalidRequestError]
) -> None:
    error = parse_error(status, {"status": "error", "error": "the words", "error_type": error_type})
    assert type(error) is cls
    assert isinstance(error, InvalidRequestError)  # the CLI: one line, exit code 2
    assert (error.status, error.error_type, error.message) == (status, error_type, "the words")
