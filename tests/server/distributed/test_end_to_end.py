"""``corteza train`` against a 2-rank server: a checkpoint of one process resumed by two,
an idle gap longer than the collective timeout, every sample trained exactly twice, and
a pushed checkpoint taken by both ranks, then a job with a cosine rate: the ranks'
weights digests agree at the stop.

The server runs with a heartbeat every second and a 5-second collective
timeout: without the heartbeat, rank 1's wait for the next header would time
out during the idle gap and torchrun would restart the group.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from corteza.client import Client, make_dataset, save_dataset
from corteza.wire import Batch
from tests.helpers import corteza
from tests.server.distributed.cluster import Cluster
from tests.server.distributed.test_equivalence import _settings

pytestmark = pytest.mark.distributed

SAMPLES, BATCH = 41, 8  # the last batch of each epoch holds one sample
TIMEOUT_S = 5.0


def test_corteza_train_against_two_ranks_after_an_idle_gap(tmp_path: Path) -> None:
    from corteza.server.state import ServerState

    root = tmp_path / "ckpt"
    single = ServerState.build(_settings(checkpoint_dir=root))  # one process saves
    rng = np.random.default_rng(3)
    dim = single.trainer.config.input_dim
    first = Batch(rng.normal(size=(6, dim)).astype(np.float32), np.ones(6, np.float32))
    single.stats.record_batch(single.trainer.train_batch(first))
    saved = single.checkpointer.save()
    assert saved is not None
    pushed = tmp_path / "pushed"
    shutil.copytree(saved, pushed)  # pushed back at the end, when the server has moved on
    probe = rng.normal(size=(5, dim)).astype(np.float32)
    expected = single.trainer.predict(probe).probabilities
    single.close()

    data = tmp_path / "data.npz"
    save_dataset(make_dataset(SAMPLES, input_dim=dim, seed=4), data)
    cluster = Cluster(
        tmp_path,
        "--checkpoint-dir",
        str(root),
        "--data-dir",
        str(tmp_path / "datasets"),
        "--no-auth",
        "--heartbeat-seconds",
        "1",
        "--collective-timeout",
        str(TIMEOUT_S),
    )
    try:
        cluster.wait_healthy()
        ranks = cluster.rank_pids()
        assert sorted(ranks) == [0, 1]
        with Client(cluster.url) as client:  # two ranks resumed what one saved
            np.testing.assert_allclose(client.predict(probe).anomaly_prob, expected, atol=1e-6)
        status = httpx.get(f"{cluster.url}/status", timeout=10).json()
        assert status["distributed"] == {"world_size": 2, "backend": "gloo", "nodes": 1}
        assert status["estadisticas"]["total_muestras"] == 6
        info = httpx.get(f"{cluster.url}/info", timeout=10).json()
        assert info["distributed"] == status["distributed"]
        shown = corteza("status", "--server", cluster.url)
        assert shown.returncode == 0, shown.stderr
        assert "distributed.world_size" in shown.stdout and "gloo" in shown.stdout
        assert "ranks: 2 (gloo, 1 node), rank 0 serves" in cluster.text()

        time.sleep(2 * TIMEOUT_S)  # idle: only heartbeats cross the control group
        assert cluster.rank_pids() == ranks, "the group was restarted while idle"

        run = corteza(
            "train",
            str(data),
            "--server",
            cluster.url,
            "--epochs",
            "2",
            "--holdout",
            "0",
            "--batch-size",
            str(BATCH),
            "--json",
        )
        assert run.returncode == 0, run.stderr
        summary = json.loads(run.stdout)
        assert summary["samples"] == SAMPLES * 2
        status = httpx.get(f"{cluster.url}/status", timeout=10).json()
        assert status["estadisticas"]["total_muestras"] == 6 + SAMPLES * 2
        assert cluster.rank_pids() == ranks
        with Client(cluster.url) as client:  # rank 0 adopts a pushed checkpoint: every rank does
            client.push(pushed)
            np.testing.assert_allclose(client.predict(probe).anomaly_prob, expected, atol=1e-6)
        job = corteza(  # a job's cosine schedule sets rank 0's rate; each batch carries it
            "train",
            str(data),
            "--server",
            cluster.url,
            "--on-server",
            "--lr-schedule",
            "cosine",
            "--epochs",
            "1",
            "--batch-size",
            str(BATCH),
            "--json",
        )
        assert job.returncode == 0, job.stderr
        assert cluster.stop() == 0
    finally:
        cluster.kill()
    digests = cluster.digests()
    assert digests[0] == digests[1], cluster.text()[-3000:]
    assert "Timed out" not in cluster.text()
