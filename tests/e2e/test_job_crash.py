"""Kill the server with SIGKILL three times during a job; it resumes and trains each sample
exactly ``epochs`` times.

Real processes: `corteza serve` with a checkpoint folder (its datasets beside
it), a job on a dataset stored there, SIGKILL (no chance to save) at three
moments chosen at random from the job's progress, and a restart on the same
port with the same folders. Nothing on the PC follows the job: the server
resumes it by itself, at the next seq its checkpoint's run book holds.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import httpx

from corteza.client import free_port, make_dataset
from corteza.server.checkpoints.store import list_checkpoints, verify_checkpoint
from corteza.server.datasets.store import DatasetStore
from tests.helpers import serve_checkpointed, wait_healthy

SAMPLES, EPOCHS, BATCH = 300, 2, 4  # 240 to train: 60 batches per epoch, 120 in all
TRAIN = 240


def job_record(url: str, job_id: str) -> dict[str, Any] | None:
    try:
        answer = httpx.get(f"{url}/v1/jobs/{job_id}", timeout=2)
    except httpx.HTTPError:
        return None
    record: dict[str, Any] = answer.json()
    return record


def test_sigkill_three_times_during_a_job_loses_nothing_and_repeats_nothing(
    tmp_path: Path,
) -> None:
    seed = int(os.environ.get("CORTEZA_CRASH_SEED") or random.randrange(10**9))
    rng = random.Random(seed)
    kill_points = sorted(rng.sample(range(10, 110), 3))
    root, log = tmp_path / "ckpt", tmp_path / "server.log"
    data = make_dataset(SAMPLES, input_dim=32, seed=3)
    store = DatasetStore(root / "datasets", max_bytes=None)  # the server's folder, let go of
    sha = store.add_arrays(data.X, data.y).sha256
    store.close()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = serve_checkpointed(port, root, log)
    kills = 0
    try:
        wait_healthy(url, process=server, log=log)
        spec = {"dataset": sha, "epochs": EPOCHS, "batch_size": BATCH, "feedback_every": 5}
        job = httpx.post(f"{url}/v1/jobs", json=spec, timeout=10).json()
        for point in kill_points:
            deadline = time.monotonic() + 120
            while (record := job_record(url, job["id"])) is None or record["cursor"] < point:
                assert record is None or record["state"] == "running", record
                assert time.monotonic() < deadline, f"no progress to {point}"
                time.sleep(0.01)
            server.send_signal(signal.SIGKILL)
            server.wait(30)
            kills += 1
            time.sleep(rng.uniform(0.1, 1.0))
            server = serve_checkpointed(port, root, log)
            wait_healthy(url, process=server, log=log)
        deadline = time.monotonic() + 180
        while (record := job_record(url, job["id"])) is None or record["state"] == "running":
            assert time.monotonic() < deadline, "the job did not finish"
            time.sleep(0.1)
        run = httpx.get(f"{url}/v1/runs/{job['run_id']}", timeout=10).json()
        status = httpx.get(f"{url}/status", timeout=10).json()["estadisticas"]
    finally:
        server.kill()
        server.wait(30)
    print(
        f"killed the server {kills} times at job batches {kill_points} "
        f"(CORTEZA_CRASH_SEED={seed} repeats them)"
    )
    assert kills == 3
    assert record["state"] == "finished", record
    assert record["cursor"] == record["total_batches"] == EPOCHS * TRAIN // BATCH
    assert run["next_seq"] == EPOCHS * TRAIN // BATCH  # no gap; the counts below: no duplicate
    assert status["total_muestras"] == TRAIN * EPOCHS == record["samples_trained"]
    assert status["total_batches"] == EPOCHS * TRAIN // BATCH
    assert [e["epoch"] for e in record["epochs_scored"]] == list(range(EPOCHS))
    assert all(e["holdout_auc"] is not None for e in record["epochs_scored"])
    for checkpoint in list_checkpoints(root):
        verify_checkpoint(checkpoint)
    verify_checkpoint(root / record["best_checkpoint"])
