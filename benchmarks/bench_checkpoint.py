"""Checkpoint save and load time and size for the default model (73.8M parameters).

What is measured: ``save_checkpoint`` (CPU copies, safetensors files, sha256,
fsync, rename) and ``load_latest`` (verify + load) after one AdamW step, so
the optimizer holds its two moment tensors per parameter; the size on disk.
The baseline is the seed's way of saving, which had none at all: the number
to compare with is the training time a crash would cost.

Run: ``python benchmarks/bench_checkpoint.py`` (about a minute).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from corteza.model import ModelConfig
from corteza.server import Settings
from corteza.server.checkpoints.store import load_latest, save_checkpoint
from corteza.server.engine.trainer import Trainer
from corteza.wire import validate_batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    trainer = Trainer(Settings(model=ModelConfig()))
    X = np.random.default_rng(0).normal(size=(32, 1600)).astype(np.float32)
    started = time.perf_counter()
    trainer.train_batch(validate_batch(X, np.zeros(32), input_dim=1600))
    step_seconds = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        saves = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            path = save_checkpoint(
                root,
                model=trainer.model,
                optimizer=trainer.optimizer,
                state={"step": 1},
                step=trainer.step,
                keep=2,
            )
            saves.append(time.perf_counter() - started)
        sizes = {f.name: f.stat().st_size for f in path.iterdir()}
        started = time.perf_counter()
        report = load_latest(root, model=trainer.model, optimizer=trainer.optimizer)
        load = time.perf_counter() - started
    assert report.loaded is not None
    total = sum(sizes.values())
    print(
        f"default model, {trainer.parameter_count:,} parameters; one batch-32 step took "
        f"{step_seconds:.2f} s"
    )
    print(f"save: {', '.join(f'{s:.2f}' for s in saves)} s; load (verify + restore): {load:.2f} s")
    print(
        f"size: {total / 1e6:.1f} MB ("
        + ", ".join(f"{n} {b / 1e6:.1f} MB" for n, b in sorted(sizes.items()) if b > 1e5)
        + ")"
    )
    print(
        f"a save every 50 batches costs {min(saves) / (50 * step_seconds):.1%} of training "
        "time at this step time"
    )


if __name__ == "__main__":
    main()
