"""Refusals every rank takes alike: a diverging loss and a rank out of device memory.

Two ranks (gloo on the CPU, fp32). A batch whose activations overflow makes the
loss NaN: rank 0 answers 422 ``training_diverged``, no rank applies anything, and
the group trains the next batch. The CPU cannot run out of memory for real, so a
stand-in (a ``sitecustomize`` on rank 1's path) makes rank 1's forward raise
``torch.OutOfMemoryError`` on inputs all 7777 (and on the second forward of inputs
all 6666): rank 0, whose own forward went through, answers 413 ``out_of_memory``
(or, at epoch 2, 422 with the first epoch applied, as one process does), and the
group is not restarted. At the stop both ranks log the same step and weights.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import numpy as np
import pytest

from corteza.client import Client
from tests.helpers import samples
from tests.server.distributed.cluster import Cluster

pytestmark = pytest.mark.distributed

DIM = 32  # the tiny preset's input width

STAND_IN = """
import os

if os.environ.get("RANK") == "1":
    import torch

    from corteza.model import CortezaCognitiva

    _forward = CortezaCognitiva.forward
    _seen = {"6666": 0}

    def forward(self, x):
        if self.training and bool((x == 7777.0).all()):
            raise torch.OutOfMemoryError("CUDA out of memory (a stand-in)")
        if self.training and bool((x == 6666.0).all()):
            _seen["6666"] += 1
            if _seen["6666"] % 2 == 0:
                raise torch.OutOfMemoryError("CUDA out of memory (a stand-in)")
        return _forward(self, x)

    CortezaCognitiva.forward = forward
"""


def _filled(n: int, value: float) -> list[dict[str, object]]:
    return [{"input_data": [value] * DIM, "anomaly_label": i % 2} for i in range(n)]


def test_divergence_and_out_of_memory_are_refused_by_every_rank_alike(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(STAND_IN)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
    cluster = Cluster(tmp_path, "--no-auth", env=env)
    probe = np.random.default_rng(0).normal(size=(3, DIM)).astype(np.float32)
    try:
        cluster.wait_healthy()
        ranks = cluster.rank_pids()
        with Client(cluster.url) as client, httpx.Client(base_url=cluster.url, timeout=60) as http:
            assert http.post("/train_layer2", json={"samples": samples(4, DIM)}).status_code == 200
            before = client.predict(probe).anomaly_prob

            # Finite in float32; the activations overflow to inf inside the model.
            diverged = http.post("/train_layer2", json={"samples": _filled(4, 3e38)})
            assert diverged.status_code == 422, diverged.text
            assert diverged.json()["error_type"] == "training_diverged"
            assert diverged.json()["error"].startswith("Training diverged: the loss became ")
            assert diverged.json()["error"].endswith(
                "at epoch 1 of this batch; that step was not applied"
            )
            np.testing.assert_array_equal(client.predict(probe).anomaly_prob, before)

            refused = http.post("/train_layer2", json={"samples": _filled(4, 7777.0)})
            assert refused.status_code == 413, refused.text
            assert refused.json() == {
                "status": "error",
                "error": "A batch of 4 samples does not fit in the memory of this device; "
                "nothing was applied. Send batches of at most 2 samples",
                "error_type": "out_of_memory",
                "fits_batch_size": 2,
            }
            np.testing.assert_array_equal(client.predict(probe).anomaly_prob, before)

            second = {"samples": _filled(4, 6666.0), "epochs": 2}
            late = http.post("/train_layer2", json=second)
            assert late.status_code == 422, late.text
            assert late.json()["error"].endswith(
                "at epoch 2 of this batch; that step was not applied, the 1 before it were and "
                "count as this batch"
            )
            # The group trains on: the next batch is an ordinary one.
            assert http.post("/train_layer2", json={"samples": samples(4, DIM)}).status_code == 200
            status = http.get("/status").json()["estadisticas"]
            assert status["total_batches"] == 3
        assert cluster.rank_pids() == ranks, "the group was restarted"
        assert cluster.stop() == 0
    finally:
        cluster.kill()
    digests = cluster.digests()
    assert digests[0] == digests[1], cluster.text()[-3000:]
    assert digests[0][0] == 3  # steps: the first batch, epoch 1 of the 6666s, the last batch
