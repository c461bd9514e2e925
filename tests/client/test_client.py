"""``Client`` against a real server on loopback."""

from __future__ import annotations

import numpy as np
import pytest

from corteza.client import Client, ConnectError, DimensionMismatchError, InvalidBatchError
from tests.conftest import TINY, LiveServer


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


def test_server_errors_raise_typed_exceptions(client: Client) -> None:
    with pytest.raises(DimensionMismatchError) as info:
        client.train_batch(np.zeros((2, 3)), [0, 1])
    assert str(info.value) == "Input dimension mismatch: expected 32D, got 3D"
    assert info.value.status == 422
    X = np.zeros((3, TINY.input_dim))
    X[2, 5] = np.nan
    with pytest.raises(InvalidBatchError, match="Non-finite input: sample 2 contains NaN or Inf"):
        client.train_batch(X, [0, 0, 1])


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
