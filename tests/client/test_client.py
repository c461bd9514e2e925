"""``Client`` against a real server on loopback."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from corteza.client import (
    AsyncClient,
    Client,
    ConnectError,
    DimensionMismatchError,
    InvalidBatchError,
    InvalidDataError,
)
from tests.conftest import TINY, LiveServer
from tests.helpers import assert_same_model, snapshot_model


@pytest.fixture
def client(live_server: LiveServer) -> Client:
    with Client(live_server.url, retries=0) as c:
        yield c  # type: ignore[misc]


def test_reads_every_seed_route(client: Client) -> None:
    assert client.health().alive
    assert client.info().input_dim == TINY.input_dim
    assert client.status().status == "online"
    assert client.metrics().tendencia == "sin_datos"
    assert client.diagnose().outputs_shapes.dendrites == [2, 16]


def test_trains_numpy_batches_and_sends_feedback(client: Client) -> None:
    X = np.random.default_rng(0).normal(size=(8, TINY.input_dim)).astype(np.float32)
    y = np.array([0, 1] * 4)
    result = client.train_batch(X, y, epochs=2)
    assert result.batch_size == 8
    assert result.step == 2
    feedback = client.send_feedback(result.outputs.dendrite_adjustments, validated=True)
    assert feedback.estadisticas.feedback.recibido == 1


def test_server_errors_raise_typed_exceptions(live_server: LiveServer) -> None:
    with Client(live_server.url, check=False) as unchecked:
        with pytest.raises(DimensionMismatchError) as info:
            unchecked.train_batch(np.zeros((2, 3)), [0, 1])
        assert str(info.value) == "Input dimension mismatch: expected 32D, got 3D"
        assert info.value.status == 422
        X = np.zeros((3, TINY.input_dim))
        X[2, 5] = np.nan
        with pytest.raises(InvalidBatchError) as nan_info:
            unchecked.train_batch(X, [0, 0, 1])
        assert str(nan_info.value) == "Non-finite input: sample 2 contains NaN or Inf"
        assert nan_info.value.sample == 2


@pytest.mark.parametrize(
    ("inputs", "labels", "message", "sample"),
    [
        (np.zeros((2, 3)), [0, 1], "Input dimension mismatch: expected 32D, got 3D", 0),
        (
            np.r_[np.zeros((3, 32)), np.full((1, 32), np.inf)],
            [0, 0, 1, 1],
            "Non-finite input: sample 3 contains NaN or Inf",
            3,
        ),
        (np.zeros((3, 32)), [0, 5, 1], "Invalid anomaly_label: sample 1 has 5, expected 0 or 1", 1),
        (np.zeros((0, 32)), [], "Empty batch: send at least one sample", None),
    ],
)
def test_bad_batches_are_refused_locally_with_the_servers_words(
    client: Client,
    live_server: LiveServer,
    inputs: np.ndarray,
    labels: list[int],
    message: str,
    sample: int | None,
) -> None:
    with pytest.raises(InvalidDataError) as info:
        client.train_batch(inputs, labels)
    assert str(info.value) == message
    assert info.value.sample == sample
    assert live_server.state.stats.total_batches == 0  # nothing reached the server


def test_predict_returns_outputs_per_sample_and_trains_nothing(
    client: Client, live_server: LiveServer
) -> None:
    client.train_batch(np.ones((4, 32)), [0, 1, 0, 1])
    before = snapshot_model(live_server.state)
    X = np.random.default_rng(1).normal(size=(5, 32))
    first = client.predict(X)
    second = client.predict(X)
    assert first.anomaly_prob.shape == (5,)
    assert first.dendrites.shape == (5, 16)
    assert first.coherence.shape == (5, 64)
    np.testing.assert_array_equal(first.anomaly_prob, second.anomaly_prob)  # eval mode
    assert_same_model(before, snapshot_model(live_server.state))
    with pytest.raises(InvalidDataError, match="Input dimension mismatch: expected 32D, got 4D"):
        client.predict(np.zeros((1, 4)))


def test_async_client_does_what_the_client_does(live_server: LiveServer) -> None:
    async def scenario() -> tuple[int, float, int]:
        async with AsyncClient(live_server.url) as client:
            trained = await client.train_batch(np.ones((4, 32)), [1, 0, 1, 0], epochs=2)
            predictions = await client.predict(np.ones((3, 32)))
            await client.send_feedback(trained.outputs.dendrite_adjustments, validated=False)
            status = await client.status()
            with pytest.raises(InvalidDataError):
                await client.train_batch(np.ones((1, 3)), [1])
            return (
                trained.step,
                float(predictions.anomaly_prob.shape[0]),
                (status.estadisticas.feedback.recibido),
            )

    assert asyncio.run(scenario()) == (2, 3.0, 1)


def test_an_unreachable_server_raises_connect_error() -> None:
    with Client("http://127.0.0.1:9", retries=1) as client, pytest.raises(ConnectError) as info:
        client.health()
    assert str(info.value).startswith("Cannot connect to http://127.0.0.1:9: ")


def test_url_comes_from_the_seeds_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CORTEZA_URL", raising=False)
    monkeypatch.setenv("COLAB_SERVER_URL", "https://example.ngrok.io/")
    assert Client().url == "https://example.ngrok.io"
    monkeypatch.setenv("CORTEZA_URL", "http://10.0.0.2:8000")
    assert Client().url == "http://10.0.0.2:8000"
    assert Client("http://explicit:1").url == "http://explicit:1"


WIRE_FORMATS = [("binary", "f32"), ("binary", "f16"), ("binary", "bf16"), ("json", "f32")]


@pytest.mark.parametrize(("wire_format", "wire_dtype"), WIRE_FORMATS)
def test_every_wire_format_trains_the_same_batch(
    live_server: LiveServer, wire_format: str, wire_dtype: str
) -> None:
    X = np.linspace(-1, 1, 4 * 32).reshape(4, 32)
    options: dict[str, Any] = {"wire_format": wire_format, "wire_dtype": wire_dtype}
    with Client(live_server.url, **options) as client:
        result = client.train_batch(X, [0, 1, 0, 1])
    assert result.batch_size == 4
    assert live_server.state.stats.total_samples == 4


def test_an_unknown_wire_format_is_refused() -> None:
    with pytest.raises(ValueError, match="wire_format must be 'binary' or 'json', got 'xml'"):
        Client("http://127.0.0.1:9", wire_format="xml")  # type: ignore[arg-type]
