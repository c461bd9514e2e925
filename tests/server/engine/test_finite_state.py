"""No non-finite value reaches the statistics or a checkpoint; unusable statistics cost
nothing but themselves."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
import numpy as np
import pytest

from corteza.server import Settings
from corteza.server.checkpoints.store import list_checkpoints
from corteza.server.engine.stats import TrainingStats
from corteza.server.engine.trainer import TrainResult
from tests.conftest import TINY, LiveServer, start_server, stop_server
from tests.helpers import assert_same_model, samples, snapshot_model
from tests.server.checkpoints.test_store import rewrite_manifest


def _train(http: httpx.Client, run_id: str, seqs: range) -> None:
    for seq in seqs:
        body = {"samples": samples(4, TINY.input_dim, seed=seq), "run_id": run_id, "seq": seq}
        assert http.post("/train_layer2", json=body).status_code == 200


@pytest.mark.parametrize(("value", "shown"), [(1e20, "1e+20"), (-1.5, "-1.5"), (1.0000001, "1")])
def test_feedback_beyond_the_tanh_range_is_refused_and_changes_nothing(
    live_server: LiveServer, http: httpx.Client, value: float, shown: str
) -> None:
    _train(http, "fb", range(1))
    before = snapshot_model(live_server.state)
    received = live_server.state.stats.feedback_received
    adjustments = [0.1] * 15 + [value]
    for validated in (True, False):
        response = http.post(
            "/feedback_dendritas", json={"ajustes_aplicados": adjustments, "validacion": validated}
        )
        assert response.status_code == 422
        assert response.json()["error_type"] == "invalid_feedback"
        assert response.json()["error"] == (
            f"ajustes_aplicados[15] is {shown}: each adjustment must be finite and within "
            "[-1, 1] (the dendrite head is tanh)"
        )
    assert_same_model(before, snapshot_model(live_server.state))
    assert live_server.state.stats.feedback_received == received
    edge = http.post(
        "/feedback_dendritas", json={"ajustes_aplicados": [1.0, -1.0] * 8, "validacion": True}
    )
    assert edge.status_code == 200  # the bound itself is allowed


def test_the_feedback_that_once_wiped_the_training_leaves_every_checkpoint_loadable(
    tmp_path: Path,
) -> None:
    settings = Settings(model=TINY, seed=0, checkpoint_dir=tmp_path, checkpoint_every=1)
    live = start_server(settings)
    try:
        with live.http() as http:
            _train(http, "wipe", range(1))
            bad = {"ajustes_aplicados": [1e20] * 16, "validacion": True}
            assert http.post("/feedback_dendritas", json=bad).status_code == 422
            _train(http, "wipe", range(1, 3))
    finally:
        stop_server(live)
    for checkpoint in list_checkpoints(tmp_path):
        text = (checkpoint / "state.json").read_text()
        assert "Infinity" not in text and "NaN" not in text
    again = start_server(settings)
    try:
        assert again.state.runs.open("wipe").next_seq == 3
        assert again.state.checkpointer.skipped == []
    finally:
        stop_server(again)


def _result(loss: float) -> TrainResult:
    return TrainResult(
        batch_size=2,
        epochs=1,
        losses=[loss],
        probabilities=np.array([0.5, 0.5], dtype=np.float32),
        dendrites=[0.0],
        coherence=[0.0],
        capa_means=(0.0, 0.0, 0.0),
        step=1,
        seconds=0.01,
    )


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
def test_statistics_refuse_non_finite_updates(bad: float) -> None:
    stats = TrainingStats()
    stats.record_batch(_result(0.5))
    before = stats.to_json()
    with pytest.raises(ValueError, match="refusing statistics of a batch with non-finite"):
        stats.record_batch(_result(bad))
    with pytest.raises(ValueError, match="refusing a non-finite dendrite loss"):
        stats.record_feedback(True, bad)
    after = stats.to_json()
    before.pop("elapsed_seconds"), after.pop("elapsed_seconds")
    assert after == before
    json.dumps(after, allow_nan=False)


def test_a_checkpoint_with_unusable_statistics_restores_everything_else(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(model=TINY, seed=0, checkpoint_dir=tmp_path, checkpoint_every=100)
    live = start_server(settings)
    try:
        with live.http() as http:
            _train(http, "kept", range(4))
        expected = snapshot_model(live.state)
    finally:
        stop_server(live)  # saves at shutdown
    (checkpoint,) = list_checkpoints(tmp_path)
    document = json.loads((checkpoint / "state.json").read_text())
    document["state"]["stats"]["dendrite_loss"] = float("inf")  # what the old server wrote
    (checkpoint / "state.json").write_text(json.dumps(document))
    rewrite_manifest(checkpoint)
    caplog.set_level(logging.WARNING)
    again = start_server(settings)
    try:
        state = again.state
        assert state.checkpointer.skipped == []
        assert state.runs.open("kept").next_seq == 4
        assert state.trainer.step == 4
        restored = snapshot_model(state)
        assert (state.stats.total_batches, state.stats.dendrite_loss) == (0, None)
    finally:
        stop_server(again)
    restored["stats"] = expected["stats"]  # the only part that starts afresh
    assert_same_model(expected, restored)
    warnings = [
        r.getMessage() for r in caplog.records if "statistics are unusable" in r.getMessage()
    ]
    assert warnings == [
        f"checkpoint {checkpoint.name}: its statistics are unusable (stats.dendrite_loss must be "
        "a finite number, got inf); weights, optimizer and runs restored, statistics start afresh"
    ]
