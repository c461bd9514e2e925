"""Two ranks train what one process trains: the same weights, and the same on every rank.

A real ``corteza serve --nproc-per-node 2`` (torchrun, gloo, fp32, dropout 0)
takes the same global batches as a one-process trainer in this test: uneven
slices (7 samples), a batch smaller than the world (1 sample: rank 1 trains an
empty slice), a two-epoch batch with dendrite targets on some rows only, and
a validated feedback step. Then its checkpoint, loaded in one process, holds
the one-process weights (within 1e-5) and predicts what the 2-rank server
predicts; at the stop both ranks log the same weights digest, the
checkpoint's bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from corteza.client import Client
from corteza.model import ModelConfig
from corteza.server.distributed.shard import weights_digest
from corteza.server.engine.feedback import DendriteFeedback
from corteza.server.engine.trainer import Trainer
from corteza.server.settings import Settings
from corteza.server.state import ServerState
from corteza.wire import Batch
from tests.server.distributed.cluster import Cluster

pytestmark = pytest.mark.distributed

TOLERANCE = 1e-5
STEPS = 3  # time steps per sample


def _settings(**fields: object) -> Settings:
    config = ModelConfig.from_dict({**ModelConfig.tiny().to_dict(), "dropout": 0.0})
    return Settings(model=config, precision="fp32", device="cpu", **fields)  # type: ignore[arg-type]


def _batches(dim: int) -> list[Batch]:
    rng = np.random.default_rng(5)

    def rows(n: int) -> tuple[np.ndarray, np.ndarray]:
        # Sequences: with one time step, attention's query and key projections get a
        # gradient that is zero but for rounding, which Adam's normalisation blows up.
        inputs = rng.normal(size=(n, STEPS, dim)).astype(np.float32)
        return inputs, (rng.random(n) < 0.4).astype(np.float32)

    x1, y1 = rows(7)  # 4 + 3: uneven slices
    x2, y2 = rows(1)  # smaller than the world: rank 1's slice is empty
    x3, y3 = rows(5)
    target = rng.uniform(-0.9, 0.9, size=(5, 16)).astype(np.float32)
    target[[0, 1, 4]] = np.nan  # rows 2 and 3 only: both on rank 1
    return [
        Batch(x1, y1),
        Batch(x2, y2),
        Batch(x3, y3, epochs=2, dendrite_target=target),
    ]


def test_two_ranks_train_what_one_process_trains(tmp_path: Path) -> None:
    root = tmp_path / "ckpt"
    cluster = Cluster(tmp_path, "--checkpoint-dir", str(root), "--no-auth")
    try:
        cluster.wait_healthy()
        reference = Trainer(_settings())
        feedback = DendriteFeedback(reference, reference.settings.feedback_lr)
        batches = _batches(reference.config.input_dim)
        adjustments = [0.5 - i / 16 for i in range(16)]
        probe = np.random.default_rng(9).normal(size=(6, STEPS, reference.config.input_dim))
        with Client(cluster.url) as client:
            for batch in batches:
                answer = client.train_batch(
                    batch.inputs,
                    batch.labels,
                    epochs=batch.epochs,
                    dendrite_target=batch.dendrite_target,
                )
                expected = reference.train_batch(batch)
                np.testing.assert_allclose(answer.losses, expected.losses, rtol=1e-5)
                assert answer.batch_size == batch.size
                assert answer.step == expected.step
            client.send_feedback(adjustments, True, reward=0.5)
            feedback.step(feedback.remember(batches[-1].inputs), adjustments, 0.5)
            served = client.predict(probe.astype(np.float32))
            client.save_checkpoint()
        assert cluster.stop() == 0
    finally:
        cluster.kill()
    reloaded = ServerState.build(_settings(checkpoint_dir=root))  # one process, as saved by two
    try:
        assert reloaded.trainer.step == reference.step == 4  # 1 + 1 + 2 epochs
        assert reloaded.stats.total_batches == 3
        ours = reloaded.trainer.model.state_dict()
        for name, tensor in reference.model.state_dict().items():
            gap = (ours[name] - tensor).abs()
            if name.endswith("self_attn.in_proj_bias"):
                # The key bias: softmax ignores a shift shared by every key, so its gradient
                # is zero but for rounding, which Adam's normalisation turns into steps of up
                # to lr either way, in one process as in two. The query and value biases count.
                width = gap.shape[0] // 3
                assert float(gap[width : 2 * width].max()) <= 4 * reference.settings.lr
                gap[width : 2 * width] = 0
            diff = float(gap.max())
            assert diff <= TOLERANCE, f"{name} differs by {diff:.3g}"
        local = reloaded.trainer.predict(probe.astype(np.float32))
        # rank 0 predicts alone, with one thread; this process with its own: rounding apart
        np.testing.assert_allclose(local.probabilities, served.anomaly_prob, atol=1e-6)
        np.testing.assert_allclose(local.dendrites, served.dendrites, atol=1e-6)
        digest = weights_digest(reloaded.trainer.model)
    finally:
        reloaded.close()
    digests = cluster.digests()
    assert digests == {0: (4, digest), 1: (4, digest)}, cluster.text()[-3000:]
