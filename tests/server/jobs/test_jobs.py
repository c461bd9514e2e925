"""Jobs on a real uvicorn: a stored dataset trained by the worker, scored, recorded, cancelled."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from corteza.client import make_dataset
from corteza.server import Settings
from corteza.server.checkpoints.store import list_checkpoints, verify_checkpoint
from tests.conftest import TINY, LiveServer, start_server, stop_server
from tests.helpers import samples, wait_until

SAMPLES, BATCH = 200, 16  # 160 to train, 40 held out: 10 batches per epoch


@pytest.fixture
def server(checkpointed_server: LiveServer) -> LiveServer:
    return checkpointed_server


def _dataset(live: LiveServer, samples: int = SAMPLES, seed: int = 1) -> str:
    data = make_dataset(samples, input_dim=TINY.input_dim, seed=seed)
    return live.state.datasets.add_arrays(data.X, data.y, name="sensor.npz").sha256


def wait_job(http: httpx.Client, job_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        record: dict[str, Any] = http.get(f"/v1/jobs/{job_id}").json()
        if record["state"] in ("finished", "cancelled", "failed"):
            return record
        assert time.monotonic() < deadline, f"job {job_id} still {record['state']}"
        time.sleep(0.05)


def test_a_job_trains_every_sample_epochs_times_and_scores_every_epoch(
    server: LiveServer, tmp_path: Path
) -> None:
    sha = _dataset(server)
    with server.http() as http:
        answer = http.post(
            "/v1/jobs",
            json={"dataset": sha, "epochs": 3, "batch_size": BATCH, "feedback_every": 4},
        )
        assert answer.status_code == 201, answer.text
        job = answer.json()
        assert job["state"] in ("queued", "running")
        assert job["run_id"] == f"job-{job['id']}"
        record = wait_job(http, job["id"])
        status = http.get("/status").json()["estadisticas"]
        listed = http.get("/v1/jobs").json()["jobs"]
    assert record["state"] == "finished", record
    assert record["stop_reason"] == "done"
    assert record["train_samples"] == 160 and record["holdout_samples"] == 40
    assert record["cursor"] == record["total_batches"] == 30
    assert record["samples_trained"] == 160 * 3
    assert status["total_muestras"] == 160 * 3
    assert status["total_batches"] == 30
    assert [e["epoch"] for e in record["epochs_scored"]] == [0, 1, 2]
    assert all(0.0 <= e["holdout_auc"] <= 1.0 for e in record["epochs_scored"])
    assert all(e["holdout_loss"] > 0 for e in record["epochs_scored"])
    best = record["best_epoch"]
    assert record["best_auc"] == max(e["holdout_auc"] for e in record["epochs_scored"])
    assert record["epochs_scored"][best]["improved"]
    kept = tmp_path / "ckpt" / record["best_checkpoint"]
    assert kept.parent.name == f"job-{job['id']}"
    verify_checkpoint(kept)  # the best epoch's checkpoint, whole, outside the rotation
    assert kept.name == record["epochs_scored"][best]["checkpoint"]
    assert all(p.parent == tmp_path / "ckpt" for p in list_checkpoints(tmp_path / "ckpt"))
    assert status["feedback"]["recibido"] == 30 // 4  # every 4th batch, as corteza train sends
    assert [j["id"] for j in listed] == [job["id"]]
    events = [e for e in server.state.events.recent() if e.type.startswith("job_")]
    kinds = [e.type for e in events]
    assert kinds == [
        "job_queued",
        "job_started",
        "job_epoch",
        "job_epoch",
        "job_epoch",
        "job_finished",
    ]
    assert all(e.data["job_id"] == job["id"] for e in events)


def test_a_cosine_job_ends_at_a_tenth_of_the_rate_and_gives_the_rate_back(
    server: LiveServer,
) -> None:
    sha = _dataset(server)
    with server.http() as http:
        spec = {"dataset": sha, "epochs": 2, "batch_size": BATCH, "lr_schedule": "cosine"}
        record = wait_job(http, http.post("/v1/jobs", json=spec).json()["id"])
    assert record["state"] == "finished"
    assert record["lr"] == pytest.approx(1e-4)  # the last batch: base / 10
    assert record["base_lr"] == 1e-3
    groups = server.state.trainer.optimizer.param_groups
    assert [g["lr"] for g in groups] == [1e-3] * len(groups)


def test_specs_the_server_cannot_train_are_refused_with_the_reason(server: LiveServer) -> None:
    sha = _dataset(server)
    narrow = make_dataset(50, input_dim=16, seed=2)
    narrow_sha = server.state.datasets.add_arrays(narrow.X, narrow.y, name="narrow.npz").sha256
    missing = "ab" * 32
    cases = [
        ({"dataset": missing}, 404, "not_found", f"No dataset {missing} on this server"),
        (
            {"dataset": narrow_sha},
            422,
            "dimension_mismatch",
            "Input dimension mismatch: expected 32D, got 16D (dataset narrow.npz)",
        ),
        (
            {"dataset": sha, "batch_size": 5000},
            422,
            "batch_too_large",
            "batch_size 5000 exceeds this server's 4096 samples per batch "
            "(its --max-batch-samples)",
        ),
        (
            {"dataset": sha, "holdout": 0, "patience": 2},
            422,
            "invalid_request",
            "patience needs a holdout to score after each epoch: give holdout > 0",
        ),
        (
            {"dataset": sha, "holdout": 0.001},
            422,
            "invalid_request",
            "holdout=0.001 of 200 samples leaves one part empty",
        ),
        (
            {"dataset": sha, "epochs": 0},
            422,
            "invalid_request",
            "Invalid request: epochs: Input should be greater than or equal to 1",
        ),
        (
            {"dataset": sha, "lr_schedule": "step"},
            422,
            "invalid_request",
            "Invalid request: lr_schedule: Input should be 'none' or 'cosine'",
        ),
    ]
    with server.http() as http:
        for spec, status, error_type, message in cases:
            answer = http.post("/v1/jobs", json=spec)
            assert (answer.status_code, answer.json()["error_type"]) == (status, error_type)
            assert answer.json()["error"] == message
        assert http.get("/v1/jobs").json()["jobs"] == []
        unknown = http.get("/v1/jobs/nope")
        assert unknown.status_code == 404
        assert unknown.json()["error"] == "No job 'nope' on this server"
    assert server.state.stats.total_batches == 0  # nothing trained


def test_cancel_stops_a_running_job_and_drops_a_queued_one(server: LiveServer) -> None:
    sha = _dataset(server, samples=2000)
    with server.http() as http:
        spec = {"dataset": sha, "epochs": 50, "batch_size": 8, "holdout": 0}
        running = http.post("/v1/jobs", json=spec).json()
        queued = http.post("/v1/jobs", json=spec).json()
        deadline = time.monotonic() + 60
        while http.get(f"/v1/jobs/{running['id']}").json()["cursor"] < 3:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        shown = http.get("/status").json()["job"]
        forged = http.post(  # a job's run, even with its fingerprint, is the server's alone
            "/train_layer2",
            json={"samples": samples(2, TINY.input_dim), "run_id": running["run_id"], "seq": 0},
            headers={"X-Corteza-Run-Fingerprint": f"{running['run_id']}:{sha[:32]}"},
        )
        dropped = http.post(f"/v1/jobs/{queued['id']}/cancel").json()
        stopped = http.post(f"/v1/jobs/{running['id']}/cancel").json()
        again = http.post(f"/v1/jobs/{running['id']}/cancel").json()
        after = http.get("/status").json()
        status = after["estadisticas"]
    assert (shown["id"], shown["dataset"], shown["epochs"]) == (running["id"], "sensor.npz", 50)
    assert shown["cursor"] >= 3 and shown["total_batches"] == 250 * 50
    assert "job" not in after  # none runs
    assert (forged.status_code, forged.json()["error_type"]) == (422, "invalid_request")
    assert forged.json()["error"] == (
        f"run_id {running['run_id']!r}: ids starting with 'job-' belong to the server's jobs; "
        "choose another"
    )
    run = server.state.runs.get(running["run_id"])
    wait_until(lambda: run is not None and not run.holders, "the cancelled job to free its run")
    assert (dropped["state"], dropped["stop_reason"], dropped["cursor"]) == (
        "cancelled",
        "cancelled",
        0,
    )
    assert (stopped["state"], stopped["stop_reason"]) == ("cancelled", "cancelled")
    assert again == stopped
    assert (dropped["cancel_requested"], stopped["cancel_requested"]) == (False, True)
    assert stopped["cursor"] < stopped["total_batches"]
    assert status["total_batches"] == stopped["cursor"]  # nothing trains after the answer
    assert status["total_muestras"] == stopped["samples_trained"] == stopped["cursor"] * 8
    assert np.isfinite(stopped["last_loss"])


def test_until_loss_stops_a_job_after_the_batches_in_flight(server: LiveServer) -> None:
    sha = _dataset(server)
    with server.http() as http:
        spec = {"dataset": sha, "epochs": 5, "batch_size": BATCH, "until_loss": 50.0}
        record = wait_job(http, http.post("/v1/jobs", json=spec).json()["id"])
    assert (record["state"], record["stop_reason"]) == ("finished", "until_loss")
    assert record["reached_target"]
    assert record["cursor"] in (5, 6)  # 5 losses to average, and at most one more in flight
    assert server.state.stats.total_samples == record["samples_trained"] == record["cursor"] * 16


def test_patience_stops_a_job_whose_holdout_does_not_improve(tmp_path: Path) -> None:
    # A rate this small leaves float32 weights as they are: the holdout score never moves.
    settings = Settings(model=TINY, seed=0, lr=1e-12, device="cpu", checkpoint_dir=tmp_path)
    live = start_server(settings)
    try:
        sha = _dataset(live)
        with live.http() as http:
            spec = {"dataset": sha, "epochs": 10, "batch_size": 40, "patience": 2}
            record = wait_job(http, http.post("/v1/jobs", json=spec).json()["id"])
    finally:
        stop_server(live)
    assert (record["state"], record["stop_reason"]) == ("finished", "patience")
    assert record["best_epoch"] == 0
    assert [e["epoch"] for e in record["epochs_scored"]] == [0, 1, 2]
    assert [e["improved"] for e in record["epochs_scored"]] == [True, False, False]
    assert record["samples_trained"] == 160 * 3


def test_a_job_stopped_with_its_server_resumes_when_the_server_comes_back(
    tmp_path: Path,
) -> None:
    settings = Settings(model=TINY, seed=0, lr=1e-3, device="cpu", checkpoint_dir=tmp_path)
    first = start_server(settings)
    try:
        sha = _dataset(first, samples=1000)
        with first.http() as http:
            spec = {"dataset": sha, "epochs": 4, "batch_size": 8}
            job = http.post("/v1/jobs", json=spec).json()
            deadline = time.monotonic() + 60
            while http.get(f"/v1/jobs/{job['id']}").json()["cursor"] < 20:
                assert time.monotonic() < deadline
                time.sleep(0.02)
    finally:
        stop_server(first)  # a clean stop: the batches queued train, a checkpoint is saved
    second = start_server(settings)
    try:
        with second.http() as http:
            record = wait_job(http, job["id"])
            status = http.get("/status").json()["estadisticas"]
        started = [e for e in second.state.events.recent() if e.type == "job_started"]
        groups = second.state.trainer.optimizer.param_groups
    finally:
        stop_server(second)
    assert record["state"] == "finished"
    assert started[0].data["resumed_at"] >= 20
    assert record["samples_trained"] == status["total_muestras"] == 800 * 4
    assert [e["epoch"] for e in record["epochs_scored"]] == [0, 1, 2, 3]
    assert [g["lr"] for g in groups] == [1e-3] * len(groups)  # the server's rate again


def test_a_queued_job_whose_dataset_was_deleted_fails_with_the_reason(server: LiveServer) -> None:
    first, gone = _dataset(server, samples=2000), _dataset(server, seed=2)
    with server.http() as http:
        running = http.post("/v1/jobs", json={"dataset": first, "epochs": 50, "batch_size": 8})
        queued = http.post("/v1/jobs", json={"dataset": gone})
        assert http.delete(f"/v1/datasets/{gone}").status_code in (200, 204)
        http.post(f"/v1/jobs/{running.json()['id']}/cancel")
        record = wait_job(http, queued.json()["id"])
    assert (record["state"], record["cursor"]) == ("failed", 0)
    assert record["error"] == f"No dataset {gone} on this server; the job cannot run"
    assert record["stop_reason"] == f"failed: {record['error']}"
