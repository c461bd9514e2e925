"""Per-head targets: samples may carry dendrite and coherence targets, JSON or binary."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from corteza.client import Client
from tests.conftest import TINY, LiveServer
from tests.helpers import assert_same_model, samples, snapshot_model


@pytest.mark.parametrize("wire_format", ["binary", "json"])
def test_targets_train_their_heads_and_report_each_loss(
    live_server: LiveServer, wire_format: str
) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(8, TINY.input_dim))
    dendrite = np.full((8, 16), 0.5)
    coherence = np.full((8, 64), -0.25)
    with Client(live_server.url, wire_format=wire_format) as client:  # type: ignore[arg-type]
        first = client.train_batch(
            X, [0, 1] * 4, dendrite_target=dendrite, coherence_target=coherence
        )
        for _ in range(30):
            last = client.train_batch(
                X, [0, 1] * 4, dendrite_target=dendrite, coherence_target=coherence
            )
        plain = client.train_batch(X, [0, 1] * 4)
    assert first.head_losses is not None and last.head_losses is not None
    assert set(first.head_losses) == {"anomaly", "dendrite", "coherence"}
    assert last.head_losses["dendrite"] < 0.5 * first.head_losses["dendrite"]  # type: ignore[operator]
    assert last.head_losses["coherence"] < 0.5 * first.head_losses["coherence"]  # type: ignore[operator]
    assert plain.head_losses == {
        "anomaly": plain.head_losses["anomaly"],
        "dendrite": None,  # type: ignore[index]
        "coherence": None,
    }


def test_json_samples_may_carry_targets_one_by_one(http: httpx.Client) -> None:
    batch = samples(3, 32)
    batch[1]["dendrite_target"] = [0.1] * 16
    response = http.post("/train_layer2", json={"samples": batch})
    assert response.status_code == 200
    assert response.json()["head_losses"]["dendrite"] is not None
    assert response.json()["head_losses"]["coherence"] is None


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ([0.1] * 3, "dendrite_target must have 16 values, got 3 (sample 2)"),
        ([0.1] * 15 + [float("inf")], "Non-finite dendrite_target: sample 2 contains NaN or Inf"),
    ],
)
def test_bad_targets_are_refused_before_the_model(
    live_server: LiveServer, http: httpx.Client, target: list[float], message: str
) -> None:
    http.post("/train_layer2", json={"samples": samples(2, 32)})
    before = snapshot_model(live_server.state)
    batch = samples(3, 32)
    batch[2]["dendrite_target"] = target
    body = json.dumps({"samples": batch}).encode()  # Infinity as JSON's literal
    response = http.post(
        "/train_layer2", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["error"] == message
    assert_same_model(before, snapshot_model(live_server.state))
