"""The NCCL path, one rank per GPU: it starts, trains, takes feedback, checkpoints, stops.

Runs only on a machine with two GPUs or more (``benchmarks/device_check.sh`` runs the
tests marked ``cuda``); the CPU tests cover the same paths with gloo.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from corteza.client import Client
from corteza.server.checkpoints.store import list_checkpoints, verify_checkpoint
from tests.server.distributed.cluster import Cluster

GPUS = torch.cuda.device_count() if torch.cuda.is_available() else 0

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.distributed,
    pytest.mark.skipif(GPUS < 2, reason="needs two CUDA GPUs or more"),
]


def test_one_rank_per_gpu_trains_and_checkpoints(tmp_path: Path) -> None:
    ranks = min(GPUS, 4)
    root = tmp_path / "ckpt"
    options = ("--checkpoint-dir", str(root), "--no-auth")
    cluster = Cluster(tmp_path, *options, ranks=ranks, device="cuda", precision="auto")
    try:
        cluster.wait_healthy(timeout=300)
        status = httpx.get(f"{cluster.url}/status", timeout=10).json()
        assert status["distributed"] == {"world_size": ranks, "backend": "nccl", "nodes": 1}
        rng = np.random.default_rng(0)
        with Client(cluster.url) as client:
            dim = client.input_dim()
            for size in (2 * ranks + 1, 1, 64):  # uneven, smaller than the world, larger
                x = rng.normal(size=(size, 3, dim)).astype(np.float32)
                answer = client.train_batch(x, (rng.random(size) < 0.3).astype(np.float32))
                assert answer.batch_size == size
            client.send_feedback([0.1] * 16, True)
            assert len(client.predict(x).anomaly_prob) == 64
            client.save_checkpoint()
        assert cluster.stop() == 0
    finally:
        cluster.kill()
    digests = cluster.digests()
    assert sorted(digests) == list(range(ranks))
    assert len(set(digests.values())) == 1, cluster.text()[-3000:]
    for checkpoint in list_checkpoints(root):
        verify_checkpoint(checkpoint)
