"""A rank that dies ends the group; torchrun restarts it; nothing is lost or doubled.

SIGKILL rank 1 in the middle of ``corteza train``: rank 0's next collective
fails, it exits, torchrun starts both ranks again, rank 0 resumes from the
newest checkpoint and the client, reconnecting by itself, resumes by
``(run_id, seq)``. Then SIGKILL the launcher: no rank outlives it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from corteza.client import make_dataset, save_dataset
from tests.server.distributed.cluster import Cluster, alive

pytestmark = pytest.mark.distributed

SAMPLES, EPOCHS, BATCH = 160, 2, 4  # 40 batches per epoch, 80 in all


def _progress(url: str) -> int:
    try:
        return int(httpx.get(f"{url}/status", timeout=2).json()["estadisticas"]["total_batches"])
    except (httpx.HTTPError, KeyError, ValueError):
        return -1


def _wait(condition: object, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_killing_a_follower_restarts_the_group_and_loses_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data.npz"
    save_dataset(make_dataset(SAMPLES, input_dim=32, seed=6), data)
    root = tmp_path / "ckpt"
    cluster = Cluster(tmp_path, "--checkpoint-dir", str(root), "--checkpoint-every", "5")
    client: subprocess.Popen[str] | None = None
    try:
        cluster.wait_healthy()
        first = cluster.rank_pids()
        client = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "corteza",
                "train",
                str(data),
                "--server",
                cluster.url,
                "--epochs",
                str(EPOCHS),
                "--batch-size",
                str(BATCH),
                "--holdout",
                "0",
                "--feedback-every",
                "3",
                "--json",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        _wait(lambda: _progress(cluster.url) >= 23 or client.poll() is not None, "no progress")
        assert client.poll() is None, "the client finished before the kill"
        os.kill(first[1], signal.SIGKILL)
        out, err = client.communicate(timeout=300)
        assert client.returncode == 0, err
        summary = json.loads(out)
        record = httpx.get(f"{cluster.url}/v1/runs/{summary['run_id']}", timeout=10).json()
        status = httpx.get(f"{cluster.url}/status", timeout=10).json()
        second = cluster.rank_pids()
        assert set(second.values()).isdisjoint(first.values()), "the group was not restarted"
        assert record["next_seq"] == EPOCHS * SAMPLES // BATCH  # no gap
        assert status["estadisticas"]["total_muestras"] == SAMPLES * EPOCHS  # no duplicate
        assert summary["samples"] == SAMPLES * EPOCHS
        assert status["distributed"]["world_size"] == 2

        cluster.process.send_signal(signal.SIGKILL)  # the launcher dies without a word
        cluster.process.wait(30)
        _wait(lambda: not any(alive(pid) for pid in second.values()), "a rank outlived", 60)
    finally:
        if client is not None:
            client.kill()
        cluster.kill()
