"""Unexpected failures: a plain 500 to the client, the traceback to the log only."""

from __future__ import annotations

import logging

import httpx
import numpy as np
import pytest

from corteza.server.engine.trainer import Trainer, TrainResult
from corteza.wire import PROTOCOL_HEADER, PROTOCOL_VERSION, Batch
from tests.conftest import LiveServer
from tests.helpers import assert_same_model, samples, snapshot_model


def test_an_internal_failure_is_a_plain_500(
    live_server: LiveServer,
    http: httpx.Client,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Fault injection: the trainer breaks in a way no input can cause.
    def broken(self: Trainer, batch: Batch) -> TrainResult:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(Trainer, "train_batch", broken)
    with caplog.at_level(logging.ERROR, logger="corteza.server.edge.errors"):
        response = http.post("/train_layer2", json={"samples": samples(2, 32)})
    assert response.status_code == 500
    assert response.json() == {
        "status": "error",
        "error": "Internal server error; the details are in the server log",
        "error_type": "internal_error",
    }
    assert response.headers[PROTOCOL_HEADER] == PROTOCOL_VERSION
    assert "secret internal detail" not in response.text
    assert "Traceback" not in response.text
    record = next(r for r in caplog.records if r.name == "corteza.server.edge.errors")
    assert record.exc_info is not None
    assert "secret internal detail" in str(record.exc_info[1])
    assert http.get("/health").status_code == 200  # the server carries on


def test_a_diverging_loss_is_refused_and_not_applied(
    live_server: LiveServer, http: httpx.Client
) -> None:
    http.post("/train_layer2", json={"samples": samples(2, 32)})
    before = snapshot_model(live_server.state)
    # Finite in float32, but the activations overflow to inf inside the model.
    huge = [{"input_data": [3e38] * 32, "anomaly_label": 1}]
    response = http.post("/train_layer2", json={"samples": huge})
    assert response.status_code == 422
    body = response.json()
    assert body["error_type"] == "training_diverged"
    assert body["error"].startswith("Training diverged: the loss became ")
    assert body["error"].endswith("at epoch 1 of this batch; that step was not applied")
    assert_same_model(before, snapshot_model(live_server.state))
    assert np.isfinite(live_server.state.trainer.model.capa5.anomaly[0].weight.sum().item())
