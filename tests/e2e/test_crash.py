"""Kill the server with SIGKILL while `corteza train` runs; nothing is lost or applied twice.

Real processes: `corteza serve` with a checkpoint directory, `corteza train`
streaming to it, and SIGKILL (no chance to save) at three moments chosen at
random from the run's progress. The server restarts on the same port from its
newest checkpoint; the client reconnects by itself and resumes at the
server's next_seq.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from corteza.client import free_port, make_dataset, save_dataset
from corteza.server.checkpoints.store import list_checkpoints, verify_checkpoint
from tests.helpers import serve_checkpointed, wait_healthy

SAMPLES, EPOCHS, BATCH = 600, 2, 4  # 150 batches per epoch, 300 in all


def _progress(url: str) -> int:
    try:
        return int(httpx.get(f"{url}/status", timeout=2).json()["estadisticas"]["total_batches"])
    except (httpx.HTTPError, KeyError, ValueError):
        return -1


def test_sigkill_during_training_loses_nothing_and_repeats_nothing(tmp_path: Path) -> None:
    seed = int(os.environ.get("CORTEZA_CRASH_SEED") or random.randrange(10**9))
    rng = random.Random(seed)
    kill_points = sorted(rng.sample(range(30, 270), 3))
    data = tmp_path / "data.npz"
    save_dataset(make_dataset(SAMPLES, input_dim=32, seed=3), data)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    root, log = tmp_path / "ckpt", tmp_path / "server.log"
    server = serve_checkpointed(port, root, log)
    wait_healthy(url, process=server, log=log)
    client = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "corteza",
            "train",
            str(data),
            "--server",
            url,
            "--epochs",
            str(EPOCHS),
            "--batch-size",
            str(BATCH),
            "--holdout",
            "0",
            "--feedback-every",
            "0",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    kills = 0
    try:
        for point in kill_points:
            deadline = time.monotonic() + 120
            while _progress(url) < point and client.poll() is None:
                assert time.monotonic() < deadline, f"no progress to {point}"
                time.sleep(0.01)
            if client.poll() is not None:
                break
            server.send_signal(signal.SIGKILL)
            server.wait(30)
            kills += 1
            time.sleep(rng.uniform(0.1, 1.0))
            server = serve_checkpointed(port, root, log)
            wait_healthy(url, process=server, log=log)
        out, err = client.communicate(timeout=300)
        assert client.returncode == 0, err
        summary = json.loads(out)
        record = httpx.get(f"{url}/v1/runs/{summary['run_id']}", timeout=10).json()
        status = httpx.get(f"{url}/status", timeout=10).json()["estadisticas"]
    finally:
        client.kill()
        server.kill()
        server.wait(30)
    total_batches = EPOCHS * SAMPLES // BATCH
    print(
        f"killed the server {kills} times at batches {kill_points} "
        f"(CORTEZA_CRASH_SEED={seed} repeats them)"
    )
    assert kills == 3
    assert record["next_seq"] == total_batches  # no gap; total_batches below: no duplicate
    assert status["total_muestras"] == SAMPLES * EPOCHS
    assert status["total_batches"] == total_batches
    assert summary["samples"] == SAMPLES * EPOCHS
    for checkpoint in list_checkpoints(root):
        verify_checkpoint(checkpoint)  # the survivors all verify
