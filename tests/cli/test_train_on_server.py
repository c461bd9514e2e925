"""`corteza train --on-server` and `corteza jobs`: real subprocesses against a real server."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from corteza.client import make_dataset, save_dataset
from tests.conftest import LiveServer
from tests.helpers import corteza

SAMPLES, EPOCHS, BATCH = 600, 2, 8  # 480 to train: 60 batches per epoch


@pytest.fixture
def server(checkpointed_server: LiveServer) -> LiveServer:
    return checkpointed_server


def test_ctrl_c_detaches_and_jobs_watch_reattaches(server: LiveServer, tmp_path: Path) -> None:
    # A long job ahead keeps the command's job queued while it detaches, on any machine.
    ahead_data = make_dataset(200, input_dim=32, seed=9)
    ahead_sha = server.state.datasets.add_arrays(ahead_data.X, ahead_data.y).sha256
    with server.http() as http:
        ahead = http.post("/v1/jobs", json={"dataset": ahead_sha, "epochs": 10_000}).json()
    data = save_dataset(make_dataset(SAMPLES, input_dim=32, seed=8), tmp_path / "data.npz")
    command = [sys.executable, "-m", "corteza", "train", str(data), "--server", server.url]
    options = ["--on-server", "--epochs", str(EPOCHS), "--batch-size", str(BATCH)]
    lines: list[str] = []
    with subprocess.Popen(
        [*command, *options],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stderr is not None
        stderr = process.stderr
        reader = threading.Thread(target=lambda: lines.extend(iter(stderr.readline, "")))
        reader.start()
        deadline = time.monotonic() + 120
        while not any("is queued behind 1 job(s)" in line for line in lines):  # following
            assert process.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "".join(lines)
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        assert process.wait(60) == 130
        reader.join(10)
    job = next(j for j in server.state.jobs.list() if j.id != ahead["id"])
    assert job.state == "queued"  # detached, not cancelled
    assert f"Job {job.id} started on {server.url}" in "".join(lines)
    assert lines[-1].strip() == (
        f"detached: job {job.id} goes on training on the server; follow it again with "
        f"`corteza jobs watch {job.id} --server {server.url}`, stop it with "
        f"`corteza jobs cancel {job.id} --server {server.url}`"
    )
    cancelled = corteza("jobs", "cancel", ahead["id"], "--server", server.url)
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.startswith(f"job {ahead['id']}: cancelled at batch ")
    watched = corteza("jobs", "watch", job.id, "--server", server.url, "--json")
    assert watched.returncode == 0, watched.stderr
    result = json.loads(watched.stdout)
    assert (result["job_id"], result["state"], result["stop_reason"]) == (
        job.id,
        "finished",
        "done",
    )
    assert result["samples"] == 480 * EPOCHS
    assert len(result["holdout_auc_per_epoch"]) == EPOCHS
    assert all(auc is not None for auc in result["holdout_auc_per_epoch"])
    before = server.state.jobs.get(ahead["id"]).samples_trained
    assert server.state.stats.total_samples == before + 480 * EPOCHS
    shown = corteza("jobs", "show", job.id, "--server", server.url)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(f"job {job.id}: finished (done), batch 120/120")
    again = corteza(*command[3:], "--on-server", "--epochs", "1", "--json")  # uploaded once
    assert again.returncode == 0, again.stderr
    assert len(server.state.jobs.list()) == 3
    unknown = corteza("jobs", "cancel", "nope", "--server", server.url)
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == "error: No job 'nope' on this server"
