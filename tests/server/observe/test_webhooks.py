"""Webhooks delivered to a real HTTP receiver on 127.0.0.1, from a real server."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from corteza.client import free_port
from corteza.server import Settings
from corteza.server.observe.bus import Event
from corteza.server.observe.webhooks import WebhookSender, slack_text
from corteza.wire.webhooks import sign, verify_signature
from tests.conftest import TINY, start_server, stop_server
from tests.helpers import samples

SECRET = "s3cret"


@dataclass
class Receiver:
    """Records every request; answers ``statuses`` in turn (then 200); may hang until released."""

    url: str
    statuses: list[int] = field(default_factory=list)
    hang: bool = False
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)

    def wait_for(self, count: int, seconds: float = 15.0) -> None:
        deadline = time.monotonic() + seconds
        while len(self.received) < count:
            assert time.monotonic() < deadline, f"{len(self.received)} of {count} arrived"
            time.sleep(0.02)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    port = free_port()
    box = Receiver(f"http://127.0.0.1:{port}/hook")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            box.received.append((dict(self.headers.items()), body))
            if box.hang:
                box.released.wait(30)
            status = box.statuses.pop(0) if box.statuses else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield box
    finally:
        box.released.set()
        server.shutdown()
        server.server_close()


def test_a_failed_delivery_is_retried_with_the_same_id_signed_in_slack_format(
    receiver: Receiver, tmp_path: Path
) -> None:
    receiver.statuses = [500]
    live = start_server(
        Settings(
            model=TINY,
            seed=0,
            checkpoint_dir=tmp_path,
            webhooks=[receiver.url],
            webhook_secret=SECRET,
            webhook_format="slack",
        )
    )
    try:
        with live.http() as http:
            trained = http.post("/train_layer2", json={"samples": samples(2, TINY.input_dim)})
            assert trained.status_code == 200, trained.text
            assert http.post("/v1/checkpoint").status_code == 200
            receiver.wait_for(2)
        (saved,) = [e for e in live.state.events.recent() if e.type == "checkpoint_saved"]
    finally:
        stop_server(live)
    (first_headers, first_body), (headers, body) = receiver.received[:2]
    assert headers["X-Corteza-Delivery"] == first_headers["X-Corteza-Delivery"]
    assert headers["X-Corteza-Event"] == "checkpoint_saved"
    assert body == first_body
    for h, b in receiver.received[:2]:
        assert verify_signature(SECRET, h["X-Corteza-Timestamp"], b, h["X-Corteza-Signature"])
    assert not verify_signature(
        "wrong", headers["X-Corteza-Timestamp"], body, headers["X-Corteza-Signature"]
    )
    assert json.loads(body) == {"text": slack_text(saved)}
    assert json.loads(body)["text"].startswith(f"corteza: checkpoint {saved.data['name']} saved ")


def test_json_format_body_and_headers(receiver: Receiver) -> None:
    sender = WebhookSender([receiver.url])
    sender.start()
    before = int(time.time())
    event = Event(
        7, "loss_improved", 1_700_000_000.0, {"step": 5, "loss": 0.2, "previous_best": 0.3}
    )
    sender.on_event(event)
    sender.on_event(Event(8, "batch_trained", 1_700_000_001.0, {}))  # not a webhook event
    receiver.wait_for(1)
    sender.close()
    after = time.time()
    ((headers, body),) = receiver.received
    assert json.loads(body) == {
        "id": headers["X-Corteza-Delivery"],
        "type": "loss_improved",
        "timestamp": "2023-11-14T22:13:20+00:00",
        "data": {"step": 5, "loss": 0.2, "previous_best": 0.3},
    }
    assert "X-Corteza-Signature" not in headers  # no secret, no signature
    assert before <= int(headers["X-Corteza-Timestamp"]) <= after  # stamped when sent


def _stalled(n: int = 1) -> Event:
    return Event(n, "stalled", time.time(), {"idle_seconds": 600.0, "last_step": n})


def test_retries_on_5xx_and_429_but_not_on_other_4xx(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    receiver.statuses = [503, 429, 200, 404]
    sender = WebhookSender([receiver.url], retry_delays=(0.05, 0.05, 0.05))
    sender.start()
    sender.on_event(_stalled(1))
    receiver.wait_for(3)
    sender.on_event(_stalled(2))
    receiver.wait_for(4)
    time.sleep(0.3)
    sender.close()
    assert len(receiver.received) == 4  # the 404 was final
    assert (sender.delivered, sender.failed) == (1, 1)
    assert "HTTP 503; retrying in 0.1 s" in caplog.text
    assert "/hook" not in caplog.text  # only the site is logged: a URL's path may be a secret


def test_gives_up_after_the_last_retry_on_a_dead_receiver() -> None:
    sender = WebhookSender([f"http://127.0.0.1:{free_port()}/hook"], retry_delays=(0.01, 0.02))
    sender.start()
    sender.on_event(_stalled())
    deadline = time.monotonic() + 10
    while sender.failed == 0:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    sender.close()
    assert (sender.delivered, sender.failed) == (0, 1)


def test_a_full_queue_drops_the_oldest(receiver: Receiver) -> None:
    receiver.hang = True
    sender = WebhookSender([receiver.url], limit=2, timeout=30)
    sender.start()
    sender.on_event(_stalled(1))
    receiver.wait_for(1)  # the first is in flight, hanging
    for n in (2, 3, 4):
        sender.on_event(_stalled(n))
    receiver.released.set()
    receiver.wait_for(3)
    sender.close()
    steps = [json.loads(body)["data"]["last_step"] for _, body in receiver.received]
    assert steps == [1, 3, 4]
    assert sender.dropped == 1


def test_shutdown_drains_for_a_bounded_time(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """close() gives up on a delivery still held by the receiver (it answers 200 once released)."""
    receiver.hang = True
    sender = WebhookSender([receiver.url])
    sender.start()
    sender.on_event(_stalled())
    receiver.wait_for(1)
    sender.close(drain_seconds=0.5)
    assert not receiver.released.is_set()  # the request is still in flight: close did not wait
    assert (sender.delivered, sender.failed) == (0, 0)
    assert "webhooks: 1 deliveries left undelivered at shutdown" in caplog.text


def test_a_hanging_receiver_does_not_slow_training(receiver: Receiver) -> None:
    """Training goes on while the receiver holds the first delivery: it never waits for it."""
    receiver.hang = True
    live = start_server(
        Settings(model=TINY, seed=0, lr=1e-2, webhooks=[receiver.url], notify_margin=0.0)
    )
    try:
        with live.http() as http:
            for i in range(21):
                body = {"samples": samples(4, TINY.input_dim, seed=i % 2)}
                assert http.post("/train_layer2", json=body).status_code == 200
            receiver.wait_for(1)
            # All 21 batches trained while the first delivery is still unanswered.
            assert not receiver.released.is_set() and len(receiver.received) == 1
            stats = http.get("/status").json()["estadisticas"]
        improved = [e for e in live.state.events.recent() if e.type == "loss_improved"]
    finally:
        receiver.released.set()  # let the drain at shutdown finish
        stop_server(live)
    assert stats["total_batches"] == 21
    assert len(improved) >= 2  # news kept coming; it queued behind the held delivery


def test_webhook_urls_are_checked_at_start() -> None:
    expected = "webhook URL must be http:// or https:// with a host, got 'ftp://example.com/x'"
    with pytest.raises(ValidationError, match=re.escape(expected)):
        Settings(webhooks=["https://ok.example/x", "ftp://example.com/x"])
    with pytest.raises(ValidationError, match="got 'http:///nohost'"):
        Settings(webhooks=["http:///nohost"])


def test_signature_helper() -> None:
    body = b'{"text":"hi"}'
    now = str(int(time.time()))
    header = sign(SECRET, now, body)
    assert header.startswith("sha256=") and len(header) == 7 + 64
    assert verify_signature(SECRET, now, body.decode(), header)
    assert not verify_signature(SECRET, now, body + b" ", header)
    assert not verify_signature(SECRET, now, body, None)
    old = str(int(time.time()) - 3600)
    assert not verify_signature(SECRET, old, body, sign(SECRET, old, body))
    assert verify_signature(SECRET, old, body, sign(SECRET, old, body), max_age=None)


def test_slack_line_for_a_stall(receiver: Receiver) -> None:
    sender = WebhookSender([receiver.url], fmt="slack")
    sender.start()
    sender.on_event(_stalled())
    receiver.wait_for(1)
    sender.close()
    headers, body = receiver.received[0]
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"text": "corteza: no batch trained for 10.0 min (last step 1)"}


def test_sigterm_ends_event_streams_cleanly_and_delivers_the_last_webhooks(
    receiver: Receiver, tmp_path: Path
) -> None:
    """A real `corteza serve` process: SIGTERM saves a checkpoint, whose webhook still goes out."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable,
        "-m",
        "corteza",
        "serve",
        "--preset",
        "tiny",
        "--port",
        str(port),
        "--no-auth",
        "--checkpoint-dir",
        str(tmp_path),
        "--webhook",
        receiver.url,
        "--log-level",
        "warning",
        "--device",
        "cpu",
    ]
    env = {**os.environ, "CORTEZA_WEBHOOK_SECRET": SECRET}
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    ended: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{url}/health")
                break
            except httpx.ConnectError:
                assert server.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        body = {"samples": samples(2, TINY.input_dim)}
        assert httpx.post(f"{url}/train_layer2", json=body, timeout=60).status_code == 200

        def follow() -> None:
            with httpx.Client(timeout=60) as http, http.stream("GET", f"{url}/v1/events") as r:
                ended.extend(r.iter_lines())
            ended.append("clean end")

        follower = threading.Thread(target=follow, daemon=True)
        follower.start()
        deadline = time.monotonic() + 30
        while not ended:  # the replayed batch_trained has arrived: the stream is open
            assert time.monotonic() < deadline, "no event on /v1/events within 30 s"
            time.sleep(0.02)
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        follower.join(timeout=10)
    finally:
        server.kill()
        server.wait()
        log.close()
    assert ended[-1] == "clean end", (tmp_path / "serve.log").read_text()
    receiver.wait_for(1)
    ((headers, sent),) = receiver.received
    assert headers["X-Corteza-Event"] == "checkpoint_saved"
    assert json.loads(sent)["data"]["reason"] == "shutdown"
    assert verify_signature(
        SECRET, headers["X-Corteza-Timestamp"], sent, headers["X-Corteza-Signature"]
    )
