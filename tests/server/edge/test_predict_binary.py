"""``POST /v1/predict`` with binary batches and binary answers, against a real server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import safetensors.numpy

from corteza.client import AsyncClient, Client, Predictions
from corteza.server import Settings
from corteza.server.edge.errors import ApiError
from corteza.server.edge.routes.predict import negotiate
from corteza.wire import (
    BATCH_CONTENT_TYPE,
    PREDICTIONS_CONTENT_TYPE,
    BatchError,
    decode_inputs,
    decode_predictions,
    encode_batch,
    encode_inputs,
    encode_predictions,
)
from tests.conftest import TINY, LiveServer, start_server, stop_server
from tests.helpers import assert_same_model, snapshot_model

BINARY = {"Content-Type": BATCH_CONTENT_TYPE}
WANT_BINARY = {**BINARY, "Accept": PREDICTIONS_CONTENT_TYPE}


@pytest.fixture(scope="module")
def live() -> Iterator[LiveServer]:
    server = start_server(Settings(model=TINY, seed=0, lr=1e-3))
    try:
        with server.http() as http:  # trained weights, not the initial ones
            x = np.random.default_rng(9).normal(size=(8, TINY.input_dim))
            body = encode_batch(x, [0, 1] * 4, epochs=2)
            assert http.post("/train_layer2", content=body, headers=BINARY).status_code == 200
        yield server
    finally:
        stop_server(server)


@pytest.fixture
def http(live: LiveServer) -> Iterator[httpx.Client]:
    with live.http() as client:
        yield client


def _inputs(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _json_answer(http: httpx.Client, x: np.ndarray) -> dict[str, Any]:
    response = http.post("/v1/predict", json={"inputs": x.tolist()})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


@pytest.mark.parametrize("shape", [(5, 32), (3, 4, 32)])
def test_binary_both_ways_gives_the_json_answer_and_changes_nothing(
    live: LiveServer, http: httpx.Client, shape: tuple[int, ...]
) -> None:
    x = _inputs(*shape)
    expected = _json_answer(http, x)
    before = snapshot_model(live.state)
    response = http.post("/v1/predict", content=encode_inputs(x), headers=WANT_BINARY)
    assert response.status_code == 200
    assert response.headers["content-type"] == PREDICTIONS_CONTENT_TYPE
    assert response.headers["vary"] == "Accept"
    got = decode_predictions(response.content)
    assert got.anomaly_probability.shape == (shape[0],)
    np.testing.assert_array_equal(got.anomaly_probability, expected["anomaly_prob"])
    np.testing.assert_array_equal(got.dendrites, expected["dendrites"])
    np.testing.assert_array_equal(got.coherence, expected["coherence"])
    assert_same_model(before, snapshot_model(live.state))


def test_a_binary_batch_gets_json_by_default_and_its_labels_are_ignored(
    http: httpx.Client,
) -> None:
    x = _inputs(4, 32, seed=1)
    expected = _json_answer(http, x)
    for headers in (BINARY, {**BINARY, "Accept": "*/*"}, {**BINARY, "Accept": "application/*"}):
        response = http.post("/v1/predict", content=encode_batch(x, [0, 1, 1, 0]), headers=headers)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.json() == expected


def test_a_json_request_can_ask_for_a_binary_answer(http: httpx.Client) -> None:
    x = _inputs(2, 32, seed=2)
    response = http.post(
        "/v1/predict", json={"inputs": x.tolist()}, headers={"Accept": PREDICTIONS_CONTENT_TYPE}
    )
    assert response.status_code == 200
    got = decode_predictions(response.content)
    np.testing.assert_array_equal(got.anomaly_probability, _json_answer(http, x)["anomaly_prob"])


@pytest.mark.parametrize(
    "accept",
    ["text/html", "application/json;q=0, application/x-corteza-predictions;q=0", "image/*"],
)
def test_an_accept_it_cannot_serve_is_406(
    live: LiveServer, http: httpx.Client, accept: str
) -> None:
    before = snapshot_model(live.state)
    response = http.post(
        "/v1/predict", content=encode_inputs(_inputs(1, 32)), headers={**BINARY, "Accept": accept}
    )
    assert response.status_code == 406
    assert response.json() == {
        "status": "error",
        "error": f"Cannot answer with {accept}; /v1/predict answers application/json or "
        "application/x-corteza-predictions",
        "error_type": "not_acceptable",
    }
    assert_same_model(before, snapshot_model(live.state))


@pytest.mark.parametrize(
    ("accept", "chosen"),
    [
        (None, "application/json"),
        ("", "application/json"),
        ("*/*", "application/json"),
        ("application/json", "application/json"),
        (PREDICTIONS_CONTENT_TYPE, PREDICTIONS_CONTENT_TYPE),
        (f"{PREDICTIONS_CONTENT_TYPE}, application/json", PREDICTIONS_CONTENT_TYPE),
        (f"application/json, {PREDICTIONS_CONTENT_TYPE}", "application/json"),
        (f"application/json;q=0.5, {PREDICTIONS_CONTENT_TYPE}", PREDICTIONS_CONTENT_TYPE),
        (f"*/*, {PREDICTIONS_CONTENT_TYPE}", PREDICTIONS_CONTENT_TYPE),  # more specific
        ("application/json;q=0, */*", PREDICTIONS_CONTENT_TYPE),
        (f"text/html, {PREDICTIONS_CONTENT_TYPE.upper()};q=0.2", PREDICTIONS_CONTENT_TYPE),
    ],
)
def test_negotiation_follows_quality_then_specificity_then_order(
    accept: str | None, chosen: str
) -> None:
    assert negotiate(accept) == chosen


def test_an_unparsable_quality_excludes_that_range() -> None:
    with pytest.raises(ApiError) as info:
        negotiate("application/json;q=high")
    assert info.value.status == 406


@pytest.mark.parametrize(
    ("body", "status", "message", "error_type"),
    [
        (
            encode_inputs(np.zeros((2, 4))),
            422,
            "Input dimension mismatch: expected 32D, got 4D",
            "dimension_mismatch",
        ),
        (
            encode_inputs(np.r_[np.zeros((1, 32)), np.full((1, 32), np.nan)]),
            422,
            "Non-finite input: sample 1 contains NaN or Inf",
            "non_finite_input",
        ),
        (
            encode_inputs(np.zeros((0, 32))),
            422,
            "Empty batch: send at least one sample",
            "empty_batch",
        ),
        (
            b"",
            400,
            f"Malformed batch: the body is empty; send a safetensors file ({BATCH_CONTENT_TYPE})",
            "malformed_body",
        ),
        (
            b"not a safetensors file",
            400,
            "Malformed batch: header of 7021991845529153390 bytes exceeds the limit of 1048576",
            "malformed_body",
        ),
    ],
)
def test_bad_binary_inputs_are_refused_before_the_model(
    live: LiveServer,
    http: httpx.Client,
    body: bytes,
    status: int,
    message: str,
    error_type: str,
) -> None:
    before = snapshot_model(live.state)
    response = http.post("/v1/predict", content=body, headers=WANT_BINARY)
    assert response.status_code == status
    assert response.json()["error"] == message
    assert response.json()["error_type"] == error_type
    assert_same_model(before, snapshot_model(live.state))


def test_an_unknown_content_type_is_415(http: httpx.Client) -> None:
    response = http.post("/v1/predict", content=b"1,2", headers={"Content-Type": "text/csv"})
    assert response.status_code == 415
    assert response.json()["error"] == (
        "Unsupported Content-Type text/csv; send application/json or application/x-corteza-batch"
    )


class RecordingTransport(httpx.HTTPTransport):
    """A real transport that notes the content types each request sent and got back."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.url.path == "/v1/predict":
            self.seen.append((request.headers["content-type"], response.headers["content-type"]))
        return response


def test_the_client_predicts_in_binary_by_default_and_in_json_on_request(
    live: LiveServer,
) -> None:
    x = _inputs(6, 3, 32, seed=3)
    results = {}
    for wire_format in ("binary", "json"):
        transport = RecordingTransport()
        with Client(live.url, wire_format=wire_format, transport=transport) as client:  # type: ignore[arg-type]
            results[wire_format] = client.predict(x)
        expected = (
            (BATCH_CONTENT_TYPE, PREDICTIONS_CONTENT_TYPE)
            if wire_format == "binary"
            else ("application/json", "application/json")
        )
        assert transport.seen == [expected]
    for name in ("anomaly_prob", "dendrites", "coherence"):
        np.testing.assert_array_equal(
            getattr(results["binary"], name), getattr(results["json"], name)
        )


class AsyncRecordingTransport(httpx.AsyncHTTPTransport):
    """The async twin of :class:`RecordingTransport`."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        if request.url.path == "/v1/predict":
            self.seen.append((request.headers["content-type"], response.headers["content-type"]))
        return response


def test_the_async_client_predicts_in_binary_too(live: LiveServer) -> None:
    x = _inputs(3, 32, seed=4)
    transport = AsyncRecordingTransport()

    async def scenario() -> Predictions:
        async with AsyncClient(live.url, transport=transport) as client:
            return await client.predict(x)

    got = asyncio.run(scenario())
    assert transport.seen == [(BATCH_CONTENT_TYPE, PREDICTIONS_CONTENT_TYPE)]
    with Client(live.url, wire_format="json") as client:
        want = client.predict(x)
    np.testing.assert_array_equal(got.anomaly_prob, want.anomaly_prob)
    np.testing.assert_array_equal(got.coherence, want.coherence)


# ---------------------------------------------------------------- the codecs


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16"])
def test_inputs_round_trip_in_every_wire_dtype(dtype: str) -> None:
    x = np.linspace(-2, 2, 2 * 3 * 32, dtype=np.float32).reshape(2, 3, 32)
    decoded = decode_inputs(encode_inputs(x, dtype=dtype), input_dim=32)  # type: ignore[arg-type]
    np.testing.assert_allclose(decoded, x, rtol=1e-2 if dtype != "f32" else 0)


def test_decode_inputs_refuses_unknown_tensors_and_a_missing_inputs_tensor() -> None:
    extra = safetensors.numpy.save(
        {"inputs": np.zeros((1, 32), np.float32), "labels": np.zeros(1, np.float32)},
        metadata={"protocol": "1.0"},
    )
    with pytest.raises(BatchError) as info:
        decode_inputs(extra, input_dim=32)
    assert str(info.value) == (
        'Unknown tensor "labels" in batch; expected inputs, anomaly_label, dendrite_target or '
        "coherence_target"
    )
    only_labels = safetensors.numpy.save(
        {"anomaly_label": np.zeros(1, np.float32)}, metadata={"protocol": "1.0"}
    )
    with pytest.raises(BatchError) as info:
        decode_inputs(only_labels, input_dim=32)
    assert str(info.value) == 'Batch has no "inputs" tensor'


def test_predictions_round_trip_and_bad_ones_are_refused() -> None:
    p, d, c = np.array([0.25, 0.5]), np.ones((2, 16)), -np.ones((2, 64))
    decoded = decode_predictions(encode_predictions(p, d, c))
    np.testing.assert_array_equal(decoded.anomaly_probability, p)
    np.testing.assert_array_equal(decoded.coherence, c)
    with pytest.raises(ValueError) as shape_info:
        encode_predictions(p, np.ones((3, 16)), c)
    assert str(shape_info.value) == (
        "predictions must be shaped [B], [B, N], [B, M]; got [2], [3, 16], [2, 64]"
    )
    with pytest.raises(BatchError) as info:
        decode_predictions(encode_inputs(np.zeros((1, 32))))
    assert str(info.value) == (
        "Malformed batch: predictions must hold exactly anomaly_probability, dendrites, "
        "coherence; got inputs"
    )
    assert info.value.error_type.value == "malformed_body"
