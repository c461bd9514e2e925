"""``OnnxModel`` (onnxruntime, no torch) and ``Client.export_onnx``'s download.

The model here is a small ONNX graph built with ``onnx.helper`` that has the
export's signature (``inputs`` [B, T, D] -> ``anomaly_probability``,
``dendrites``, ``coherence`` of the last time step), so the expected outputs
are a line of numpy. The real export against ``/v1/predict`` is in
``tests/server/engine/test_export.py`` and ``tests/cli/test_predict_onnx.py``; so are
``Client.export_onnx`` and ``AsyncClient.export_onnx`` against the real server, its 501
included (one export serves them all). Here: a download damaged on the way.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from corteza.client import (
    Client,
    InvalidDataError,
    OnnxModel,
    ProtocolError,
)

DIM = 8


def _weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    widths = {"w_anomaly": 1, "w_dendrites": 16, "w_coherence": 64}
    return {name: rng.normal(size=(DIM, w)).astype(np.float32) for name, w in widths.items()}


def _reference(x: np.ndarray) -> list[np.ndarray]:
    last = x if x.ndim == 2 else x[:, -1]
    w = _weights()
    logit = (last @ w["w_anomaly"])[:, 0]
    return [
        1 / (1 + np.exp(-logit)),
        np.tanh(last @ w["w_dendrites"]),
        np.tanh(last @ w["w_coherence"]),
    ]


def _graph_model(input_name: str = "inputs") -> onnx.ModelProto:
    nodes = [
        helper.make_node("Gather", [input_name, "minus_one"], ["last"], axis=1),
        helper.make_node("MatMul", ["last", "w_anomaly"], ["logit"]),
        helper.make_node("Squeeze", ["logit", "one"], ["logit_b"]),
        helper.make_node("Sigmoid", ["logit_b"], ["anomaly_probability"]),
        helper.make_node("MatMul", ["last", "w_dendrites"], ["d"]),
        helper.make_node("Tanh", ["d"], ["dendrites"]),
        helper.make_node("MatMul", ["last", "w_coherence"], ["c"]),
        helper.make_node("Tanh", ["c"], ["coherence"]),
    ]
    constants = [numpy_helper.from_array(v, k) for k, v in _weights().items()]
    constants += [
        numpy_helper.from_array(np.array(-1, np.int64), "minus_one"),
        numpy_helper.from_array(np.array([1], np.int64), "one"),
    ]
    graph = helper.make_graph(
        nodes,
        "corteza-like",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", "time", DIM])],
        [
            helper.make_tensor_value_info("anomaly_probability", TensorProto.FLOAT, ["batch"]),
            helper.make_tensor_value_info("dendrites", TensorProto.FLOAT, ["batch", 16]),
            helper.make_tensor_value_info("coherence", TensorProto.FLOAT, ["batch", 64]),
        ],
        constants,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    props = {"corteza.step": "7", "corteza.model_config": json.dumps({"input_dim": DIM})}
    helper.set_model_props(model, props)
    return model


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"
    onnx.save(_graph_model(), path)
    return path


@pytest.mark.parametrize("shape", [(5, DIM), (7, 4, DIM), (1, 1, DIM)])
def test_predicts_both_input_shapes(model_path: Path, shape: tuple[int, ...]) -> None:
    x = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    model = OnnxModel(model_path)
    got = model.predict(x)
    chunked = model.predict(x, chunk=3)
    for name, want in zip(("anomaly_prob", "dendrites", "coherence"), _reference(x), strict=True):
        assert getattr(got, name).dtype == np.float32
        np.testing.assert_allclose(getattr(got, name), want, atol=1e-6)
        np.testing.assert_array_equal(getattr(chunked, name), getattr(got, name))


def test_reads_what_the_export_recorded(model_path: Path) -> None:
    model = OnnxModel(model_path)
    assert model.input_dim == DIM
    assert model.step == 7
    assert model.config == {"input_dim": DIM}


@pytest.mark.parametrize(
    ("inputs", "message", "error_type"),
    [
        (np.zeros((2, 5)), "Input dimension mismatch: expected 8D, got 5D", "dimension_mismatch"),
        (
            np.r_[np.zeros((1, DIM)), np.full((1, DIM), np.nan)],
            "Non-finite input: sample 1 contains NaN or Inf",
            "non_finite_input",
        ),
        (np.zeros((0, DIM)), "Empty batch: send at least one sample", "empty_batch"),
    ],
)
def test_bad_inputs_get_the_servers_words(
    model_path: Path, inputs: np.ndarray, message: str, error_type: str
) -> None:
    with pytest.raises(InvalidDataError) as info:
        OnnxModel(model_path).predict(inputs)
    assert str(info.value) == message
    assert info.value.error_type == error_type


def test_a_missing_or_foreign_file_is_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(InvalidDataError) as missing:
        OnnxModel(tmp_path / "nothing.onnx")
    assert str(missing.value) == f"No ONNX model at {tmp_path / 'nothing.onnx'}"
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(InvalidDataError) as broken:
        OnnxModel(garbage)
    assert str(broken.value).startswith(f"{garbage} is not a valid ONNX model: ")
    other = tmp_path / "other.onnx"
    onnx.save(_graph_model(input_name="x"), other)
    with pytest.raises(InvalidDataError) as foreign:
        OnnxModel(other)
    assert str(foreign.value) == (
        f"{other} is not a corteza ONNX export: expected input inputs [B, T, D] and outputs "
        "anomaly_probability, dendrites, coherence; found x ['batch', 'time', 8] -> "
        "anomaly_probability, dendrites, coherence"
    )


def _python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_runs_without_importing_torch(model_path: Path) -> None:
    result = _python(
        """
import sys
import numpy as np
from corteza.client import OnnxModel
print(OnnxModel(sys.argv[1]).predict(np.ones((3, 8))).dendrites.shape, "torch" in sys.modules)
""",
        str(model_path),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(3, 16) False"


def test_without_onnxruntime_it_says_what_to_install(model_path: Path) -> None:
    """onnxruntime is installed here; the child process marks it absent in ``sys.modules``."""
    result = _python(
        """
import sys
sys.modules["onnxruntime"] = None
from corteza.client import InvalidDataError, OnnxModel
try:
    OnnxModel(sys.argv[1])
except InvalidDataError as exc:
    print(exc.error_type, exc)
""",
        str(model_path),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "missing_dependency Running an ONNX model here needs onnxruntime: "
        "pip install 'corteza[local]'"
    )


# ---------------------------------------------------------------- the download


class _CorruptingHandler(BaseHTTPRequestHandler):
    """Answers ``GET /v1/export/onnx`` with bytes that do not match their ``Repr-Digest``."""

    def do_GET(self) -> None:
        body = b"onnx bytes"
        digest = base64.b64encode(hashlib.sha256(b"other bytes").digest()).decode()
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Disposition", 'attachment; filename="corteza-step3.onnx"')
        self.send_header("Repr-Digest", f"sha-256=:{digest}:")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_corrupted_download_leaves_nothing_behind(tmp_path: Path) -> None:
    """A stand-in server sends what a corteza server never does, a file damaged on the way
    (a proxy, a tunnel): that cannot be produced on demand with the real server."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _CorruptingHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with Client(url, retries=0) as client, pytest.raises(ProtocolError) as info:
            client.export_onnx(tmp_path)
    finally:
        server.shutdown()
        server.server_close()
    assert str(info.value) == "the ONNX file arrived corrupted (sha256 differs); pull again"
    assert list(tmp_path.iterdir()) == []
