"""A multi-epoch batch that diverges at epoch k > 1 is recorded as the k - 1 epochs it
applied: a retry replays it and never trains them twice."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from corteza.server import Settings
from tests.conftest import TINY, LiveServer, start_server, stop_server
from tests.helpers import assert_same_model, samples, snapshot_model


@pytest.fixture
def exploding() -> Iterator[LiveServer]:
    """A learning rate so large that the first step wrecks the weights: epoch 2 diverges."""
    live = start_server(Settings(model=TINY, seed=0, lr=1e30, max_grad_norm=None))
    try:
        yield live
    finally:
        stop_server(live)


def test_divergence_at_epoch_two_records_the_first_and_a_retry_replays_it(
    exploding: LiveServer,
) -> None:
    body = {"samples": samples(4, TINY.input_dim), "epochs": 3, "run_id": "multi", "seq": 0}
    with exploding.http() as http:
        first = http.post("/train_layer2", json=body)
        after_first = snapshot_model(exploding.state)
        retry = http.post("/train_layer2", json=body)
        status = http.get("/status").json()["estadisticas"]
    assert first.status_code == 422
    assert first.json()["error_type"] == "training_diverged"
    assert first.json()["error"].endswith(
        "at epoch 2 of this batch; that step was not applied, the 1 before it were and count "
        "as this batch"
    )
    assert retry.status_code == 200
    answer = retry.json()
    assert (answer["replayed"], answer["epochs"], answer["diverged_at_epoch"]) == (True, 1, 2)
    assert_same_model(after_first, snapshot_model(exploding.state))  # nothing trained twice
    state = exploding.state
    assert (state.trainer.step, state.runs.open("multi").next_seq) == (1, 1)
    assert (status["total_batches"], status["total_muestras"], status["step"]) == (1, 4, 1)


def test_divergence_at_epoch_one_records_nothing(exploding: LiveServer) -> None:
    with exploding.http() as http:
        ok = {"samples": samples(4, TINY.input_dim), "epochs": 1, "run_id": "one", "seq": 0}
        assert http.post("/train_layer2", json=ok).status_code == 200  # wrecks the weights
        before = snapshot_model(exploding.state)
        bad = {**ok, "seq": 1, "epochs": 2}
        refused = http.post("/train_layer2", json=bad)
    assert refused.status_code == 422
    assert refused.json()["error"].endswith("at epoch 1 of this batch; that step was not applied")
    assert_same_model(before, snapshot_model(exploding.state))
    assert exploding.state.runs.open("one").next_seq == 1


def test_a_partial_batch_without_a_run_is_counted_once(exploding: LiveServer) -> None:
    with exploding.http() as http:
        response = http.post(
            "/train_layer2", json={"samples": samples(2, TINY.input_dim), "epochs": 4}
        )
        stats = http.get("/status").json()["estadisticas"]
    assert response.status_code == 422
    assert (stats["total_batches"], stats["step"]) == (1, 1)
