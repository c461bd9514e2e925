"""``GET /v1/export/onnx``: real exports, run by onnxruntime, against ``/v1/predict``.

An export of even the tiny model takes 10-30 s of tracing on 2 CPUs, so one
module-scoped server serves the tiny tests here and exports once.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from corteza.client import AsyncClient, Client, InternalServerError, free_port
from corteza.model import ModelConfig
from corteza.server import Settings
from corteza.server.engine.export import Snapshot, take_snapshot
from corteza.wire import BATCH_CONTENT_TYPE, PREDICTIONS_CONTENT_TYPE, encode_batch, encode_inputs
from corteza.wire.predictions import decode_predictions
from tests.conftest import TINY, LiveServer, start_server, stop_server

TOLERANCE = 1e-4  # absolute, on every output
OUTPUTS = ("anomaly_probability", "dendrites", "coherence")
# Batch and time sizes unlike the export's tracing input (2, 3), [B, D] included.
SHAPES = [(1, None), (5, None), (1, 1), (4, 7), (3, 2)]


def _inputs(batch: int, time_steps: int | None, dim: int, seed: int) -> np.ndarray:
    shape = (batch, dim) if time_steps is None else (batch, time_steps, dim)
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _served(http: httpx.Client, x: np.ndarray) -> list[np.ndarray]:
    response = http.post(
        "/v1/predict",
        content=encode_inputs(x),
        headers={"Content-Type": BATCH_CONTENT_TYPE, "Accept": PREDICTIONS_CONTENT_TYPE},
    )
    assert response.status_code == 200, response.text
    return list(decode_predictions(response.content))


def _run(session: ort.InferenceSession, x: np.ndarray) -> list[np.ndarray]:
    fed = x[:, None, :] if x.ndim == 2 else x  # [B, D] is T = 1, as in the model
    outputs: list[np.ndarray] = session.run(list(OUTPUTS), {"inputs": fed})
    return outputs


def _max_diffs(session: ort.InferenceSession, http: httpx.Client, dim: int) -> list[float]:
    """The largest absolute difference of each output over SHAPES."""
    worst = [0.0, 0.0, 0.0]
    for i, (batch, time_steps) in enumerate(SHAPES):
        x = _inputs(batch, time_steps, dim, seed=i)
        for k, (got, want) in enumerate(zip(_run(session, x), _served(http, x), strict=True)):
            assert got.shape == want.shape
            worst[k] = max(worst[k], float(np.abs(got - want).max()))
    return worst


def _session(body: bytes) -> ort.InferenceSession:
    return ort.InferenceSession(body, providers=["CPUExecutionProvider"])


def _train(http: httpx.Client, samples: int, epochs: int, seed: int) -> dict[str, Any]:
    x = np.random.default_rng(seed).normal(size=(samples, 4, TINY.input_dim))
    body = encode_batch(x, np.arange(samples) % 2, epochs=epochs)
    response = http.post(
        "/train_layer2", content=body, headers={"Content-Type": BATCH_CONTENT_TYPE}
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


@pytest.fixture(scope="module")
def live() -> Iterator[LiveServer]:
    server = start_server(Settings(model=TINY, seed=0, lr=1e-3))
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture(scope="module")
def first_export(live: LiveServer) -> httpx.Response:
    """The first export, asked for while a batch trains: it must hold that batch's step."""
    with live.http() as http:
        _train(http, 8, 1, seed=0)  # step 1
        trained: dict[str, Any] = {}

        def train_big_batch() -> None:
            with live.http() as other:
                trained.update(_train(other, 256, 40, seed=1))

        batch = threading.Thread(target=train_big_batch)
        batch.start()
        deadline = time.monotonic() + 30
        while live.state.worker.queue_depth == 0 and batch.is_alive():
            assert time.monotonic() < deadline
            time.sleep(0.001)
        response = http.get("/v1/export/onnx", timeout=300)
        batch.join()
    assert trained["step"] == 41
    return response


def test_the_export_is_a_download_of_the_weights_after_the_queued_batch(
    first_export: httpx.Response,
) -> None:
    response = first_export
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["content-disposition"] == 'attachment; filename="corteza-step41.onnx"'
    assert response.headers["x-corteza-step"] == "41"
    assert int(response.headers["content-length"]) == len(response.content)
    digest = base64.b64encode(hashlib.sha256(response.content).digest()).decode()
    assert response.headers["repr-digest"] == f"sha-256=:{digest}:"


def test_the_graph_has_dynamic_batch_and_time_and_records_where_it_came_from(
    first_export: httpx.Response,
) -> None:
    session = _session(first_export.content)
    (inputs,) = session.get_inputs()
    assert (inputs.name, inputs.type) == ("inputs", "tensor(float)")
    assert inputs.shape == ["batch", "time", TINY.input_dim]
    assert [(o.name, o.shape) for o in session.get_outputs()] == [
        ("anomaly_probability", ["batch"]),
        ("dendrites", ["batch", 16]),
        ("coherence", ["batch", 64]),
    ]
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["corteza.step"] == "41"
    assert meta["corteza.protocol"] == "1.0"
    assert ModelConfig.from_dict(json.loads(meta["corteza.model_config"])) == TINY


def test_onnx_matches_predict_for_both_shapes(
    live: LiveServer, first_export: httpx.Response, figure: Callable[[str], None]
) -> None:
    with live.http() as http:
        diffs = _max_diffs(_session(first_export.content), http, TINY.input_dim)
    figure(f"onnx-vs-predict tiny: max_abs_diff={max(diffs):.1e} tolerance={TOLERANCE:g}")
    assert max(diffs) <= TOLERANCE


def test_a_second_download_reuses_the_export(
    live: LiveServer, first_export: httpx.Response, tmp_path: Path
) -> None:
    """Downloaded again by ``Client.export_onnx`` and ``AsyncClient.export_onnx``."""
    directory = live.app.state.onnx_exports.directory
    (file,) = directory.iterdir()
    stamp = file.stat().st_mtime_ns
    seen: list[tuple[int, int | None]] = []
    with Client(live.url, retries=0) as client:
        path = client.export_onnx(tmp_path, progress=lambda done, total: seen.append((done, total)))

    async def download() -> Path:
        async with AsyncClient(live.url, retries=0) as client:
            return await client.export_onnx(tmp_path / "async" / "mine.onnx")

    named = asyncio.run(download())
    assert path == tmp_path / "corteza-step41.onnx"  # the server's name for it
    assert path.read_bytes() == first_export.content == named.read_bytes()
    assert seen[-1] == (len(first_export.content), len(first_export.content))
    # The same file, untouched: no second export ran.
    assert [(f.name, f.stat().st_mtime_ns) for f in directory.iterdir()] == [(file.name, stamp)]


def test_feedback_changes_the_fingerprint_that_keys_the_export_at_the_same_step(
    live: LiveServer, first_export: httpx.Response
) -> None:
    """The cache key is (step, weights): feedback moves the dendrite head, not the step.

    Checked on the key rather than by a second export, which would cost 10-30 s.
    """
    worker = live.state.worker

    def snapshot() -> Snapshot:
        return asyncio.run(worker.run(lambda: take_snapshot(worker.trainer)))

    before = snapshot()
    assert snapshot().fingerprint() == before.fingerprint()
    with live.http() as http:
        feedback = {"ajustes_aplicados": [0.9] * 16, "validacion": True, "timestamp": "now"}
        assert http.post("/feedback_dendritas", json=feedback).json()["applied"] is True
    after = snapshot()
    assert after.step == before.step == 41
    assert after.fingerprint() != before.fingerprint()


# None in sys.modules is how Python spells "not installed": import raises, find_spec answers None.
WITHOUT_ONNX = """
import sys
sys.modules["onnx"] = sys.modules["onnxscript"] = None
from corteza.cli import main
sys.argv = ["corteza", "serve", "--preset", "tiny", "--device", "cpu", "--port", sys.argv[1]]
main()
"""


def test_a_server_without_the_onnx_extra_answers_501(tmp_path: Path) -> None:
    """A real server process in which onnx and onnxscript cannot be imported.

    The packages are installed here, so that process marks them absent in
    ``sys.modules`` before it starts.
    """
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", WITHOUT_ONNX, str(port)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
        response = httpx.get(f"{url}/v1/export/onnx", timeout=60)
        with Client(url, retries=0) as client, pytest.raises(InternalServerError) as refused:
            client.export_onnx(tmp_path)

        async def download() -> Path:
            async with AsyncClient(url, retries=0) as client:
                return await client.export_onnx(tmp_path / "mine.onnx")

        with pytest.raises(InternalServerError) as async_refused:
            asyncio.run(download())
        still_predicts = httpx.post(f"{url}/v1/predict", json={"inputs": [[0.0] * 32]})
    finally:
        server.kill()
        server.wait(timeout=30)
        assert server.stderr is not None
        server.stderr.close()
    assert response.status_code == 501
    assert response.json() == {
        "status": "error",
        "error": "ONNX export needs the onnx extra: pip install 'corteza[onnx]'",
        "error_type": "export_unavailable",
    }
    for error in (refused.value, async_refused.value):  # the clients raise the server's words
        assert (str(error), error.status, error.error_type) == (
            "ONNX export needs the onnx extra: pip install 'corteza[onnx]'",
            501,
            "export_unavailable",
        )
    assert list(tmp_path.iterdir()) == []
    assert still_predicts.status_code == 200


@pytest.mark.slow
def test_the_default_model_exports_and_matches_predict(figure: Callable[[str], None]) -> None:
    """The full 73.8M-parameter model: one export, both input shapes."""
    live = start_server(Settings(model=ModelConfig(), seed=0))
    try:
        with live.http() as http:
            started = time.perf_counter()
            response = http.get("/v1/export/onnx", timeout=600)
            seconds = time.perf_counter() - started
            assert response.status_code == 200
            session = _session(response.content)
            worst = [0.0, 0.0, 0.0]
            for i, (batch, time_steps) in enumerate([(3, None), (2, 5)]):
                x = _inputs(batch, time_steps, 1600, seed=i)
                for k, (got, want) in enumerate(
                    zip(_run(session, x), _served(http, x), strict=True)
                ):
                    worst[k] = max(worst[k], float(np.abs(got - want).max()))
    finally:
        stop_server(live)
    figure(
        f"onnx-vs-predict default: max_abs_diff={max(worst):.1e} tolerance={TOLERANCE:g} "
        f"export_s={seconds:.1f} size_mb={len(response.content) / 1e6:.1f}"
    )
    assert max(worst) <= TOLERANCE
