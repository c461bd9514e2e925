"""Checkpoints in a running server: every N batches, on demand, at shutdown; resume at start."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from websockets.sync.client import connect

from corteza.server import Settings
from corteza.server.checkpoints.store import MODEL_FILE, list_checkpoints
from corteza.wire import PROTOCOL_VERSION
from tests.conftest import TINY, start_server, stop_server
from tests.helpers import samples
from tests.server.edge.test_stream import _frame


def _settings(root: Path, every: int = 2) -> Settings:
    return Settings(model=TINY, seed=0, lr=1e-3, checkpoint_dir=root, checkpoint_every=every)


def _train(url: str, run_id: str, seqs: range) -> None:
    import httpx

    with httpx.Client(base_url=url, timeout=60) as http:
        for seq in seqs:
            body = {"samples": samples(4, 32, seed=seq), "run_id": run_id, "seq": seq}
            assert http.post("/train_layer2", json=body).status_code == 200


def test_a_restarted_server_resumes_weights_runs_and_statistics(tmp_path: Path) -> None:
    live = start_server(_settings(tmp_path, every=100))
    _train(live.url, "r1", range(5))
    weights = {k: v.clone() for k, v in live.state.trainer.model.state_dict().items()}
    stop_server(live)  # shutdown saves a checkpoint
    assert len(list_checkpoints(tmp_path)) == 1
    again = start_server(_settings(tmp_path, every=100))
    try:
        state = again.state
        assert state.runs.open("r1").next_seq == 5
        assert state.runs.open("r1").next_seq == 5
        assert state.stats.total_samples == 20
        assert state.trainer.step == 5
        restored = state.trainer.model.state_dict()
        assert all(bool((weights[k] == restored[k]).all()) for k in weights)
        _train(again.url, "r1", range(5, 6))
        assert state.stats.total_samples == 24
    finally:
        stop_server(again)


def test_checkpoints_every_n_batches_keep_the_last_k(tmp_path: Path) -> None:
    live = start_server(
        Settings(model=TINY, checkpoint_dir=tmp_path, checkpoint_every=2, checkpoint_keep=2)
    )
    try:
        _train(live.url, "r", range(7))
        assert len(list_checkpoints(tmp_path)) == 2  # saved after batches 2, 4, 6
    finally:
        stop_server(live)


def test_a_corrupt_newest_checkpoint_is_skipped_and_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    live = start_server(_settings(tmp_path, every=3))
    _train(live.url, "r", range(3))  # checkpoint at seq 2
    _train(live.url, "r", range(3, 6))  # checkpoint at seq 5
    stop_server(live)  # and one at shutdown (same batches)
    newest = list_checkpoints(tmp_path)[0]
    data = (newest / MODEL_FILE).read_bytes()
    (newest / MODEL_FILE).write_bytes(data[: len(data) // 2])  # truncated
    with caplog.at_level(logging.WARNING):
        again = start_server(_settings(tmp_path, every=3))
    try:
        assert again.state.runs.open("r").next_seq == 6  # the previous one holds all six
        assert again.state.checkpointer.skipped[0][0] == newest
        assert "model.safetensors has" in again.state.checkpointer.skipped[0][1]
        assert any("skipping checkpoint" in r.getMessage() for r in caplog.records)
    finally:
        stop_server(again)


def test_checkpoint_routes(tmp_path: Path) -> None:
    import httpx

    live = start_server(_settings(tmp_path, every=100))
    try:
        with httpx.Client(base_url=live.url, timeout=60) as http:
            assert http.get("/v1/checkpoint").json()["error_type"] == "not_found"
            _train(live.url, "r", range(2))
            saved = http.post("/v1/checkpoint").json()
            assert saved["status"] == "saved"
            assert saved["runs"] == {"r": 2}
            listing = http.get("/v1/checkpoint").json()
            assert listing["checkpoint"] == saved["checkpoint"]
            assert set(listing["files"]) == {
                "model.safetensors",
                "optimizer.safetensors",
                "rng.safetensors",
                "state.json",
            }
            state = http.get("/v1/checkpoint/files/state.json").json()
            assert state["step"] == 2
            refused = http.get("/v1/checkpoint/files/..%2Fsecret")
            assert refused.status_code == 404
    finally:
        stop_server(live)


def test_checkpoint_routes_without_a_directory(http: object) -> None:
    import httpx

    assert isinstance(http, httpx.Client)
    response = http.post("/v1/checkpoint")
    assert response.status_code == 409
    assert response.json()["error"] == (
        "Checkpoints are off: start the server with --checkpoint-dir DIR"
    )


def test_the_stream_says_when_batches_are_durable(tmp_path: Path) -> None:
    live = start_server(_settings(tmp_path, every=2))
    try:
        url = live.url.replace("http://", "ws://") + "/v1/train/stream"
        with connect(url) as ws:
            ws.send(json.dumps({"type": "hello", "protocol": PROTOCOL_VERSION, "run_id": None}))
            run_id = json.loads(ws.recv(timeout=30))["run_id"]
            for seq in range(4):
                ws.send(_frame(run_id, seq))
            messages = [json.loads(ws.recv(timeout=30)) for _ in range(6)]
    finally:
        stop_server(live)
    durable = [m["seq"] for m in messages if m["type"] == "durable"]
    acks = [m["seq"] for m in messages if m["type"] == "ack"]
    assert acks == [0, 1, 2, 3]
    assert durable == [1, 3]
