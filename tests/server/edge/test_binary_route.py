"""``POST /train_layer2`` with ``application/x-corteza-batch`` bodies, on a real uvicorn."""

from __future__ import annotations

import json
import struct
from typing import Any

import httpx
import numpy as np
import pytest

from corteza.model import ModelConfig
from corteza.server.edge.routes.training import parse_train_body
from corteza.wire.binary import BATCH_CONTENT_TYPE, encode_batch
from tests.conftest import LiveServer
from tests.helpers import assert_same_model, samples, snapshot_model

D = 32  # the tiny model's width
X = np.random.default_rng(0).uniform(-1, 1, size=(4, D)).astype(np.float32)
LABELS = [0, 1, 0, 1]


def _post(
    http: httpx.Client, body: bytes, content_type: str = BATCH_CONTENT_TYPE
) -> httpx.Response:
    return http.post("/train_layer2", content=body, headers={"Content-Type": content_type})


def _with_metadata(**metadata: str) -> bytes:
    """A good batch whose header metadata is replaced, written by hand."""
    rows, labels = X.astype("<f4").tobytes(), np.array(LABELS, "<f4").tobytes()
    header = {
        "__metadata__": metadata,
        "inputs": {"dtype": "F32", "shape": [4, D], "data_offsets": [0, len(rows)]},
        "anomaly_label": {
            "dtype": "F32",
            "shape": [4],
            "data_offsets": [len(rows), len(rows) + len(labels)],
        },
    }
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + rows + labels


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16"])
def test_a_binary_batch_trains_and_answers_the_same_json(http: httpx.Client, dtype: Any) -> None:
    response = _post(http, encode_batch(X, LABELS, epochs=2, dtype=dtype, run_id="r", seq=0))
    assert response.status_code == 200, response.text
    body = response.json()
    reference = http.post("/train_layer2", json={"samples": samples(4, D)}).json()
    assert body.keys() == reference.keys()
    assert body["outputs"].keys() == reference["outputs"].keys()
    assert body["status"] == "trained"
    assert body["batch_size"] == 4
    # The header's epochs were read (steps per epoch: test_routes.py).
    assert (body["epochs"], len(body["losses"])) == (2, 2)


def test_a_sequence_batch_with_targets_trains(http: httpx.Client) -> None:
    body = encode_batch(
        np.stack([X, X], axis=1),
        LABELS,
        dendrite_target=np.zeros((4, 16)),
        coherence_target=np.zeros((4, 64)),
        batch_id="b1",
    )
    response = _post(http, body)
    assert response.status_code == 200, response.text
    assert response.json()["batch_size"] == 4


def test_binary_f32_and_json_give_the_trainer_the_same_batch() -> None:
    config = ModelConfig.tiny()
    rows = [
        {"input_data": row, "anomaly_label": y} for row, y in zip(X.tolist(), LABELS, strict=True)
    ]
    from_json, _, _ = parse_train_body(
        json.dumps({"samples": rows, "epochs": 3}).encode(), "application/json", config
    )
    from_binary, _, _ = parse_train_body(
        encode_batch(X, LABELS, epochs=3), BATCH_CONTENT_TYPE, config
    )
    np.testing.assert_array_equal(from_binary.inputs, from_json.inputs)
    np.testing.assert_array_equal(from_binary.labels, from_json.labels)
    assert from_binary.epochs == from_json.epochs == 3


CASES = [
    pytest.param(
        b"",
        400,
        "Malformed batch: the body is empty; send a safetensors file (application/x-corteza-batch)",
        "malformed_body",
        None,
        id="empty",
    ),
    pytest.param(
        encode_batch(X, LABELS)[:-5],
        400,
        'Malformed batch: tensor "inputs" '
        "data_offsets [16, 528] run past the 523-byte buffer (truncated body?)",
        "malformed_body",
        None,
        id="truncated",
    ),
    pytest.param(
        b"\x00" * 3 + b"garbage",
        400,
        "Malformed batch: header of 7017296932062101504 bytes exceeds the limit of 1048576",
        "malformed_body",
        None,
        id="garbage",
    ),
    pytest.param(
        encode_batch(X, LABELS).replace(b'"inputs":{"dtype":"F32"', b'"inputs":{"dtype":"I32"'),
        422,
        "inputs must be F32, F16 or BF16, got I32",
        "invalid_request",
        None,
        id="int32-inputs",
    ),
    pytest.param(
        encode_batch(X, LABELS).replace(
            b'"anomaly_label":{"dtype":"F32"', b'"anomaly_label":{"dtype":"I32"'
        ),
        422,
        "anomaly_label must be F32 or U8, got I32",
        "invalid_request",
        None,
        id="int32-labels",
    ),
    pytest.param(
        _with_metadata(protocol="2.0"),
        400,
        "Unsupported protocol version 2.0; this server speaks 1.x",
        "unsupported_protocol",
        None,
        id="protocol-2",
    ),
    pytest.param(
        _with_metadata(protocol="1.0", epochs="1.5"),
        422,
        'epochs must be an integer, got "1.5"',
        "invalid_request",
        None,
        id="epochs",
    ),
    pytest.param(
        encode_batch(np.zeros((2, 3)), [0, 1]),
        422,
        "Input dimension mismatch: expected 32D, got 3D",
        "dimension_mismatch",
        0,
        id="wrong-width",
    ),
    pytest.param(
        encode_batch(np.where(np.arange(4)[:, None] == 2, np.nan, X), LABELS, dtype="f16"),
        422,
        "Non-finite input: sample 2 contains NaN or Inf",
        "non_finite_input",
        2,
        id="nan-in-f16",
    ),
    pytest.param(
        encode_batch(X, [0, 1, 2, 0]),
        422,
        "Invalid anomaly_label: sample 2 has 2, expected 0 or 1",
        "invalid_label",
        2,
        id="label-2",
    ),
    pytest.param(
        encode_batch(X, LABELS, dendrite_target=np.zeros((4, 8))),
        422,
        "dendrite_target must have shape [4, 16], got [4, 8]",
        "invalid_request",
        None,
        id="target-shape",
    ),
]


@pytest.mark.parametrize(("body", "status", "message", "error_type", "sample"), CASES)
def test_bad_binary_batches_are_refused_before_the_model(
    live_server: LiveServer,
    http: httpx.Client,
    body: bytes,
    status: int,
    message: str,
    error_type: str,
    sample: int | None,
) -> None:
    assert _post(http, encode_batch(X, LABELS)).status_code == 200  # optimizer state exists
    before = snapshot_model(live_server.state)
    response = _post(http, body)
    assert response.status_code == status
    expected: dict[str, object] = {"status": "error", "error": message, "error_type": error_type}
    if sample is not None:
        expected["sample"] = sample
    assert response.json() == expected
    assert_same_model(before, snapshot_model(live_server.state))


@pytest.mark.parametrize("content_type", ["text/plain", "application/octet-stream"])
def test_other_content_types_are_a_415(
    live_server: LiveServer, http: httpx.Client, content_type: str
) -> None:
    before = snapshot_model(live_server.state)
    response = _post(http, json.dumps({"samples": samples(2, D)}).encode(), content_type)
    assert response.status_code == 415
    assert response.json() == {
        "status": "error",
        "error": f"Unsupported Content-Type {content_type}; "
        "send application/json or application/x-corteza-batch",
        "error_type": "unsupported_media_type",
    }
    assert_same_model(before, snapshot_model(live_server.state))


@pytest.mark.parametrize(
    "headers", [{}, {"Content-Type": "application/json; charset=utf-8"}], ids=["none", "charset"]
)
def test_json_stays_the_default(http: httpx.Client, headers: dict[str, str]) -> None:
    body = json.dumps({"samples": samples(2, D)}).encode()
    response = http.post("/train_layer2", content=body, headers=headers)
    assert response.status_code == 200, response.text


def test_the_content_type_is_matched_without_case_or_parameters(http: httpx.Client) -> None:
    response = _post(http, encode_batch(X, LABELS), "Application/X-Corteza-Batch; v=1")
    assert response.status_code == 200, response.text


def test_openapi_documents_both_bodies(http: httpx.Client) -> None:
    post = http.get("/openapi.json").json()["paths"]["/train_layer2"]["post"]
    content = post["requestBody"]["content"]
    assert content["application/json"]["schema"]["required"] == ["samples"]
    binary = content[BATCH_CONTENT_TYPE]
    assert binary["schema"] == {"type": "string", "format": "binary"}
    assert "safetensors" in binary["description"]
    assert "415" in post["responses"]
