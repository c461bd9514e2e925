"""Exactly once over REST: (run_id, seq) applied once, replayed after, refused ahead."""

from __future__ import annotations

import httpx
import numpy as np

from corteza.wire import BATCH_CONTENT_TYPE, encode_batch
from tests.conftest import LiveServer
from tests.helpers import assert_same_model, samples, snapshot_model


def _json(run_id: str, seq: int) -> dict[str, object]:
    return {"samples": samples(4, 32, seed=seq), "run_id": run_id, "seq": seq}


def test_a_seq_is_applied_once_and_replayed_after(
    live_server: LiveServer, http: httpx.Client
) -> None:
    first = http.post("/train_layer2", json=_json("run-a", 0))
    assert first.status_code == 200
    assert first.json()["replayed"] is False
    before = snapshot_model(live_server.state)
    again = http.post("/train_layer2", json=_json("run-a", 0))
    assert again.status_code == 200
    assert again.json()["replayed"] is True
    assert again.json()["loss"] == first.json()["loss"]
    assert_same_model(before, snapshot_model(live_server.state))
    assert live_server.state.runs.open("run-a").next_seq == 1


def test_a_seq_ahead_is_refused_with_next(live_server: LiveServer, http: httpx.Client) -> None:
    http.post("/train_layer2", json=_json("run-b", 0))
    before = snapshot_model(live_server.state)
    ahead = http.post("/train_layer2", json=_json("run-b", 2))
    assert ahead.status_code == 409
    assert ahead.json() == {
        "status": "error",
        "error": "Out of order: run run-b expects seq 1, got 2",
        "error_type": "out_of_order",
        "next_seq": 1,
    }
    assert_same_model(before, snapshot_model(live_server.state))


def test_binary_batches_carry_run_and_seq(live_server: LiveServer, http: httpx.Client) -> None:
    X = np.ones((3, 32), dtype=np.float32)
    for seq in (0, 1, 1, 0, 2):
        body = encode_batch(X, [0, 1, 0], run_id="bin", seq=seq)
        response = http.post(
            "/train_layer2", content=body, headers={"Content-Type": BATCH_CONTENT_TYPE}
        )
        assert response.status_code == 200
    assert live_server.state.runs.open("bin").next_seq == 3
    assert live_server.state.stats.total_samples == 9


def test_run_id_and_seq_go_together(http: httpx.Client) -> None:
    response = http.post("/train_layer2", json={"samples": samples(1, 32), "seq": 0})
    assert response.status_code == 422
    assert response.json()["error"] == "run_id and seq go together: send both or neither"
    bad = http.post("/train_layer2", json={"samples": samples(1, 32), "seq": 0, "run_id": "../x"})
    assert bad.status_code == 422
    assert bad.json()["error"] == "run_id must be 1-64 letters, digits, '-' or '_', got '../x'"


def test_the_run_record_is_readable(http: httpx.Client) -> None:
    for seq in (0, 1, 1, 2):
        http.post("/train_layer2", json=_json("rec", seq))
    record = http.get("/v1/runs/rec").json()
    assert {k: record[k] for k in ("run_id", "next_seq", "live")} == {
        "run_id": "rec",
        "next_seq": 3,
        "live": False,
    }
    assert isinstance(record["updated_at"], float)
    assert http.get("/status").json()["estadisticas"]["total_batches"] == 3  # once each
    missing = http.get("/v1/runs/nope")
    assert missing.status_code == 404
    assert missing.json()["error"] == "No run 'nope' on this server"
