"""Hostile traffic against a real ``corteza serve`` process, all of it on loopback.

Each case is bounded in count and time. The suite ends with one figure line:

``edge: idle_lockout_ok=1 metrics_bytes_after_2000_odd_methods=N json_peak_rss_mb=N
upload_total_capped=1 server_errors=0 tracebacks=0``

``server_errors`` counts 5xx answers and 1011 closes over every case; ``tracebacks``
counts ``Traceback`` lines in the server's log.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from corteza.client import free_port, make_dataset, save_dataset
from corteza.wire import PROTOCOL_VERSION
from tests.conftest import TINY
from tests.helpers import serve_process, wait_healthy
from tests.security.uploads import with_manifest

TOKEN = f"Tk{secrets.token_urlsafe(24)}Tk"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DEADLINE_S = 120  # the longest any one case may take
FIGURES: dict[str, int] = {}
SERVER_ERRORS: list[str] = []


@dataclass
class ServeProcess:
    process: subprocess.Popen[bytes]
    url: str
    port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def http(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, **kwargs)


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    root = tmp_path_factory.mktemp("hostile")
    port = free_port()
    log = root / "server.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "CORTEZA_HEADER_TIMEOUT_S": "3"}
    process = serve_process(
        *("--preset", "tiny", "--port", str(port), "--token", TOKEN),
        *("--checkpoint-dir", str(root / "checkpoints")),
        log=log,
        env=env,
    )
    live = ServeProcess(process, f"http://127.0.0.1:{port}", port, log)
    try:
        wait_healthy(live.url, process=process, timeout=DEADLINE_S)
        yield live
    finally:
        process.terminate()
        process.wait(timeout=60)


def _note(answer: httpx.Response) -> httpx.Response:
    if answer.status_code >= 500:
        SERVER_ERRORS.append(f"{answer.request.method[:20]} {answer.request.url.path}")
    return answer


# ------------------------------------------------------------------ 1. idle lockout


def test_idle_sockets_lock_out_neither_health_nor_training(
    serve: ServeProcess, tmp_path: Path
) -> None:
    data = tmp_path / "data.npz"
    save_dataset(make_dataset(64, input_dim=TINY.input_dim, seed=1), data)
    with ExitStack() as stack:
        for i in range(63):  # 53 silent, 10 with half a request head
            sock = stack.enter_context(socket.create_connection(("127.0.0.1", serve.port), 10))
            if i >= 53:
                sock.sendall(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        with serve.http() as http:
            assert _note(http.get("/health")).status_code == 200
            assert _note(http.get("/status", headers=AUTH)).status_code == 200
        train = subprocess.run(
            [
                *(sys.executable, "-m", "corteza", "train", str(data), "--server", serve.url),
                *("--token", TOKEN, "--batch-size", "16", "--holdout", "0", "--json"),
            ],
            capture_output=True,
            text=True,
            timeout=DEADLINE_S,
        )
    assert train.returncode == 0, train.stderr
    assert json.loads(train.stdout)["samples"] == 64
    FIGURES["idle_lockout_ok"] = 1


# ------------------------------------------------------------------ 2. metrics labels


def test_two_thousand_odd_methods_leave_the_metrics_small(serve: ServeProcess) -> None:
    deadline = time.monotonic() + DEADLINE_S
    answered = 0
    for i in range(2000):  # each refusal closes its connection: one connection each
        method = f"M{i:04d}" + "X" * 7995
        with socket.create_connection(("127.0.0.1", serve.port), 10) as sock:
            sock.sendall(f"{method} /status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            status = sock.makefile("rb").readline()
        assert status.startswith(b"HTTP/1.1 401"), status
        answered += 1
        assert time.monotonic() < deadline
    with serve.http(headers=AUTH) as http:
        metrics = _note(http.get("/metrics"))
    assert answered == 2000
    assert metrics.status_code == 200
    assert len(metrics.content) < 100_000
    FIGURES["metrics_bytes_after_2000_odd_methods"] = len(metrics.content)


# ------------------------------------------------------------------ 3. JSON memory


def _rss_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def _peak_rss_growth_mb(pid: int, send: Any) -> tuple[float, Any]:
    """Peak RSS of the server during ``send()`` above its RSS before (sampled every 5 ms)."""
    before = _rss_kb(pid, "VmRSS")
    peak = before
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss_kb(pid, "VmRSS"))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = send()
    finally:
        done.set()
        sampler.join(timeout=30)
    return (peak - before) / 1024, result


def test_json_bodies_cost_a_few_times_their_size(serve: ServeProcess, figure: Any) -> None:
    over = json.dumps({"inputs": [[0] * TINY.input_dim] * 312_500}).encode()  # ~29 MB
    row = [0.12345678901234567 * (i + 1) for i in range(TINY.input_dim)]  # full precision
    largest = json.dumps({"inputs": [row] * 4096}).encode()  # the row cap, 2D
    with serve.http(headers={**AUTH, "Content-Type": "application/json"}) as http:
        # The accepted one first: the allocator keeps what a peak took, hiding later ones.
        accepted_mb, accepted = _peak_rss_growth_mb(
            serve.pid, lambda: _note(http.post("/v1/predict", content=largest))
        )
        refused_mb, refused = _peak_rss_growth_mb(
            serve.pid, lambda: _note(http.post("/v1/predict", content=over))
        )
    assert refused.status_code == 413
    assert refused.json()["error_type"] == "batch_too_large"
    assert accepted.status_code == 200 and accepted.json()["count"] == 4096
    figure(
        f"edge-json: over_cap_body_mb={len(over) / 2**20:.1f} over_cap_peak_mb={refused_mb:.0f} "
        f"largest_accepted_body_mb={len(largest) / 2**20:.1f} "
        f"largest_accepted_peak_mb={accepted_mb:.0f}"
    )
    assert refused_mb < 10 * len(over) / 2**20
    FIGURES["json_peak_rss_mb"] = round(max(refused_mb, accepted_mb))


# ------------------------------------------------------------------ 4. uploads


def test_uploads_are_capped_in_number_and_total(serve: ServeProcess) -> None:
    with serve.http(headers=AUTH) as http:
        starts = [_note(http.post("/v1/checkpoint/uploads")) for _ in range(200)]
        opened = [a.json() for a in starts if a.status_code == 200]
        assert len(opened) == 4
        assert {a.status_code for a in starts[4:]} == {429}
        upload = opened[0]
        url = f"/v1/checkpoint/uploads/{upload['upload_id']}"
        budget, chunk = upload["max_upload_bytes"], upload["max_chunk_bytes"]
        sent, answer = 0, None
        names = ["model.safetensors", "optimizer.safetensors", "rng.safetensors"]
        for name in names:  # whole chunks into each file until the total is refused
            while sent <= budget:
                size = min(chunk, budget + 1 - sent)
                answer = _note(
                    http.put(
                        f"{url}/{name}",
                        content=b"\0" * size,
                        headers={"Content-Range": f"bytes {sent}-{sent + size - 1}/*"},
                    )
                )
                if answer.status_code != 200:
                    break
                sent += size
                if sent > chunk * 2:
                    break  # next file: no file is bigger than one model
            if answer is not None and answer.status_code != 200:
                break
        for other in opened:
            _note(http.post(f"/v1/checkpoint/uploads/{other['upload_id']}/commit"))
    assert answer is not None and answer.status_code == 413
    assert answer.json()["error"].startswith("Upload too large:")
    FIGURES["upload_total_capped"] = 1


# ------------------------------------------------------------------ 5. no 500s


def _commit_nested(http: httpx.Client, name: str) -> httpx.Response:
    body = {"samples": [{"input_data": [0.1] * TINY.input_dim, "anomaly_label": 0}] * 4}
    assert _note(http.post("/train_layer2", json=body)).status_code == 200
    assert _note(http.post("/v1/checkpoint")).status_code == 200
    listed = http.get("/v1/checkpoint").json()
    files = {
        n: http.get(f"/v1/checkpoints/{listed['checkpoint']}/files/{n}").content
        for n in listed["files"]
    }
    files = with_manifest({**files, "state.json": b"[" * 200_000})
    if name == "MANIFEST.json":
        files["MANIFEST.json"] = b"[" * 200_000
    upload_id = http.post("/v1/checkpoint/uploads").json()["upload_id"]
    for file, content in files.items():
        _note(http.put(f"/v1/checkpoint/uploads/{upload_id}/{file}", content=content))
    return _note(http.post(f"/v1/checkpoint/uploads/{upload_id}/commit"))


def _ws_close(serve: ServeProcess, *frames: str | bytes) -> int:
    url = f"ws://127.0.0.1:{serve.port}/v1/train/stream"
    with connect(url, additional_headers=AUTH) as ws:
        for frame in frames:
            ws.send(frame)
            if frame is frames[0] and len(frames) > 1:
                assert json.loads(ws.recv(timeout=30))["type"] == "welcome"
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=30)
    assert closed.value.rcvd is not None
    code = closed.value.rcvd.code
    json.loads(closed.value.rcvd.reason)  # a JSON reason
    if code == 1011:
        SERVER_ERRORS.append(f"ws {frames[0]!r:.30}")
    return code


def test_hostile_inputs_get_4xx_and_clear_close_codes(serve: ServeProcess) -> None:
    hello = json.dumps({"type": "hello", "protocol": PROTOCOL_VERSION, "run_id": None})
    with serve.http(headers=AUTH) as http:
        for value in (b"\xb2", b"9" * 5000):
            answer = _note(http.get("/v1/events", headers={b"Last-Event-ID": value}))
            assert answer.status_code == 422
        upload_id = http.post("/v1/checkpoint/uploads").json()["upload_id"]
        ranged = _note(
            http.put(
                f"/v1/checkpoint/uploads/{upload_id}/state.json",
                content=b"{}",
                headers={"Content-Range": f"bytes {'9' * 5000}-2/*"},
            )
        )
        assert ranged.status_code == 400
        _note(http.post(f"/v1/checkpoint/uploads/{upload_id}/commit"))
        for name in ("state.json", "MANIFEST.json"):
            assert _commit_nested(http, name).status_code == 422
    with socket.create_connection(("127.0.0.1", serve.port), 10) as sock:  # leaves mid-body
        sock.sendall(
            f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n".encode()
            + b'{"inputs": [['
        )
    assert _ws_close(serve, b"\x00binary hello") == 1003
    assert _ws_close(serve, "[" * 4000) == 1007
    assert _ws_close(serve, hello, json.dumps({"type": "batch"})) == 1003
    with serve.http() as http:  # the server is still well
        assert _note(http.get("/health")).status_code == 200


# ------------------------------------------------------------------ the figure


def test_edge_figures(serve: ServeProcess, figure: Any) -> None:
    time.sleep(0.5)  # the last WARNING lines reach the log
    log = serve.log.read_text(errors="replace")
    tracebacks = log.count("Traceback (most recent call last)")
    figure(
        f"edge: idle_lockout_ok={FIGURES.get('idle_lockout_ok', 0)} "
        f"metrics_bytes_after_2000_odd_methods="
        f"{FIGURES.get('metrics_bytes_after_2000_odd_methods', -1)} "
        f"json_peak_rss_mb={FIGURES.get('json_peak_rss_mb', -1)} "
        f"upload_total_capped={FIGURES.get('upload_total_capped', 0)} "
        f"server_errors={len(SERVER_ERRORS)} tracebacks={tracebacks}"
    )
    assert SERVER_ERRORS == []
    assert tracebacks == 0, log[-4000:]
    assert set(FIGURES) == {
        "idle_lockout_ok",
        "metrics_bytes_after_2000_odd_methods",
        "json_peak_rss_mb",
        "upload_total_capped",
    }
