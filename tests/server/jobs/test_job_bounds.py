"""Jobs within bounds: finite specs, a capped queue, best checkpoints that go with their
records, checkpoints at the server's rate, and no silent retraining (real uvicorn)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from corteza.server import Settings
from corteza.server.checkpoints.store import list_checkpoints, verify_checkpoint
from corteza.server.jobs.book import new_job
from corteza.wire.jobs import JobSpec
from tests.conftest import TINY, LiveServer, start_server, stop_server
from tests.helpers import samples
from tests.server.jobs.test_jobs import BATCH, _dataset, wait_job


def _settings(tmp_path: Path, **extra: object) -> Settings:
    return Settings(
        model=TINY, seed=0, lr=1e-3, device="cpu", checkpoint_dir=tmp_path / "ckpt", **extra
    )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    live = start_server(_settings(tmp_path))
    try:
        yield live
    finally:
        stop_server(live)


def _wait_cursor(live: LiveServer, job_id: str, cursor: int) -> None:
    deadline = time.monotonic() + 60
    with live.http() as http:
        while http.get(f"/v1/jobs/{job_id}").json()["cursor"] < cursor:
            assert time.monotonic() < deadline, f"job {job_id} below cursor {cursor}"
            time.sleep(0.02)


def test_non_finite_bounds_and_long_sequences_are_refused_and_the_queue_survives_a_bad_record(
    tmp_path: Path,
) -> None:
    live = start_server(_settings(tmp_path, max_seq_len=4))
    try:
        sha = _dataset(live)
        steps = live.state.datasets.add_arrays(
            np.zeros((20, 6, TINY.input_dim), np.float32), np.zeros(20), name="steps.npz"
        ).sha256
        runner = live.state.jobs
        # A record no JSON file can hold (as Infinity was taken before): saving it must not
        # stop the queue nor the jobs behind it.
        unsavable = JobSpec(dataset=sha, batch_size=BATCH).model_copy(
            update={"until_loss": float("inf")}
        )
        runner.book.add(new_job(unsavable))
        with live.http() as http:
            infinite = http.post(  # Python's json reads Infinity, and so does FastAPI
                "/v1/jobs",
                content=f'{{"dataset": "{sha}", "until_loss": Infinity}}',
                headers={"Content-Type": "application/json"},
            )
            long = http.post("/v1/jobs", json={"dataset": steps})
            good = http.post("/v1/jobs", json={"dataset": sha, "batch_size": BATCH})
            assert good.status_code == 201, good.text
            record = wait_job(http, good.json()["id"])
    finally:
        stop_server(live)
    assert (infinite.status_code, infinite.json()["error_type"]) == (422, "invalid_request")
    assert (
        infinite.json()["error"] == "Invalid request: until_loss: Input should be a finite number"
    )
    assert (long.status_code, long.json()["error_type"]) == (422, "sequence_too_long")
    assert long.json()["error"] == (
        "Sequence too long: 6 time steps (dataset steps.npz); this server takes at most 4 "
        "(--max-seq-len)"
    )
    assert (record["state"], record["stop_reason"]) == ("finished", "done")


def test_the_queue_is_capped_with_the_reason(server: LiveServer) -> None:
    sha = _dataset(server, samples=2000)
    server.state.jobs.max_queued = 2
    spec = {"dataset": sha, "epochs": 50, "batch_size": 8, "holdout": 0}
    with server.http() as http:
        running = http.post("/v1/jobs", json=spec).json()
        _wait_cursor(server, running["id"], 1)
        queued = [http.post("/v1/jobs", json=spec) for _ in range(2)]
        refused = http.post("/v1/jobs", json=spec)
        for job in [running] + [answer.json() for answer in queued]:
            http.post(f"/v1/jobs/{job['id']}/cancel")
        jobs = http.get("/v1/jobs").json()["jobs"]
    assert [answer.status_code for answer in queued] == [201, 201]
    assert (refused.status_code, refused.json()["error_type"]) == (429, "quota_exceeded")
    assert refused.json()["error"] == (
        "2 jobs are queued on this server, its limit: wait for one to end or cancel one "
        "(POST /v1/jobs/{id}/cancel)"
    )
    assert len(jobs) == 3
    assert all(job["cancel_requested"] for job in jobs[:1])  # the running one, asked to stop


def test_a_best_checkpoint_goes_with_its_record_and_its_bytes_are_shown(
    server: LiveServer, tmp_path: Path
) -> None:
    sha = _dataset(server)
    server.state.jobs.book.keep_done = 1
    best = tmp_path / "ckpt" / "best"
    records = []
    with server.http() as http:
        for _ in range(3):
            job = http.post("/v1/jobs", json={"dataset": sha, "batch_size": BATCH}).json()
            records.append(wait_job(http, job["id"]))
    _, second, third = records
    assert all(record["best_checkpoint"] for record in records)
    assert sorted(p.name for p in best.iterdir()) == sorted(
        [f"job-{second['id']}", f"job-{third['id']}"]
    )  # the first job's record went when the third was queued, and its checkpoint with it
    kept = tmp_path / "ckpt" / third["best_checkpoint"]
    verify_checkpoint(kept)
    assert third["best_bytes"] == sum(f.stat().st_size for f in kept.iterdir() if f.is_file())


def test_every_checkpoint_of_a_scheduled_job_holds_the_servers_rate(tmp_path: Path) -> None:
    live = start_server(_settings(tmp_path, checkpoint_every=1, checkpoint_keep=50))
    try:
        sha = _dataset(live)
        with live.http() as http:
            spec = {"dataset": sha, "batch_size": BATCH, "lr_schedule": "cosine"}
            record = wait_job(http, http.post("/v1/jobs", json=spec).json()["id"])
    finally:
        stop_server(live)
    assert record["state"] == "finished" and record["lr"] == pytest.approx(1e-4)
    rates = set()
    for path in list_checkpoints(tmp_path / "ckpt"):
        document = json.loads((path / "state.json").read_text(encoding="utf-8"))
        rates |= {group["lr"] for group in document["optimizer"]["param_groups"]}
    assert len(list_checkpoints(tmp_path / "ckpt")) >= 10  # one per batch, at least
    assert rates == {1e-3}


def test_a_job_whose_run_was_forgotten_fails_instead_of_training_again(tmp_path: Path) -> None:
    settings = _settings(tmp_path, runs_keep=0)  # idle runs are forgotten at once
    first = start_server(settings)
    try:
        sha = _dataset(first, samples=1000)
        with first.http() as http:
            job = http.post("/v1/jobs", json={"dataset": sha, "epochs": 4, "batch_size": 8}).json()
        _wait_cursor(first, job["id"], 20)
    finally:
        stop_server(first)
    before = first.state.stats.total_batches  # the batches in flight at the stop trained too
    second = start_server(settings)
    try:
        with second.http() as http:
            record = wait_job(http, job["id"])
        trained = second.state.stats.total_batches
    finally:
        stop_server(second)
    assert record["state"] == "failed"
    cursor = record["cursor"]
    assert cursor >= 20
    assert record["error"] == (
        f"its run {job['run_id']} is no longer in the run book (pruned while the server was "
        f"down, --runs-keep / --runs-keep-hours), so the {cursor} batches it trained would be "
        "trained again from batch 0; queue it again to retrain"
    )
    assert trained == before >= cursor  # nothing trained again


def test_client_batches_between_an_epochs_save_and_its_best_never_fail_the_job(
    tmp_path: Path,
) -> None:
    # Every batch saves and only one checkpoint is kept: a client's batch right after the
    # epoch's save would prune it before it is kept as the best, unless both go together.
    live = start_server(_settings(tmp_path, checkpoint_every=1, checkpoint_keep=1))
    stop = threading.Event()

    def stream() -> None:
        with live.http() as http:
            seq = 0
            while not stop.is_set():
                body = {"samples": samples(2, TINY.input_dim, seed=seq), "run_id": "c", "seq": seq}
                assert http.post("/train_layer2", json=body).status_code == 200
                seq += 1

    client = threading.Thread(target=stream)
    try:
        sha = _dataset(live)
        client.start()
        with live.http() as http:
            spec = {"dataset": sha, "epochs": 4, "batch_size": 40}
            record = wait_job(http, http.post("/v1/jobs", json=spec).json()["id"])
    finally:
        stop.set()
        client.join(timeout=30)
        stop_server(live)
    assert (record["state"], record["stop_reason"]) == ("finished", "done"), record["error"]
    verify_checkpoint(tmp_path / "ckpt" / record["best_checkpoint"])
