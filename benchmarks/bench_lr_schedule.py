"""Which learning-rate schedule should a job use by default: none, or warmup + cosine?

What is measured: the holdout ROC-AUC and loss after every epoch of a job
(``POST /v1/jobs``) on a real ``corteza serve`` subprocess, once with
``lr_schedule="none"`` (the server's rate throughout) and once with
``"cosine"`` (5% linear warmup, then cosine decay to a tenth), on two
synthetic sets:

* ``demo``: ``corteza demo``'s recipe (the default model, 2,000 ``sensor``
  samples, 20% held out, batch 32, lr 3e-4, seed 0), for ``--epochs`` epochs;
* ``rare``: the same recipe with 5% anomalies instead of 20%, seed 1.

Each run starts a fresh server (the same initial weights: ``--seed``, 0 by default; it
also shifts the data seeds).
Run: ``python benchmarks/bench_lr_schedule.py`` (minutes on a CPU),
``--preset tiny`` for a quick look, ``--device cuda`` on a GPU box.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

from corteza.client import Client, LocalServer, make_dataset, save_dataset

SETS = {"demo": {"anomaly_rate": 0.2, "seed": 0}, "rare": {"anomaly_rate": 0.05, "seed": 1}}


def run_job(
    data: Path, schedule: str, *, preset: str, lr: float, epochs: int, device: str, seed: int
) -> dict[str, object]:
    args = ["--preset", preset, "--lr", str(lr), "--seed", str(seed), "--device", device]
    with LocalServer(args) as local, Client(local.url) as client:
        sha = client.upload_dataset(data)
        started = time.perf_counter()
        job = client.start_job(sha, epochs=epochs, batch_size=32, lr_schedule=schedule)
        record = list(client.watch_job(job.id, interval=0.5))[-1]
        seconds = time.perf_counter() - started
    aucs = [e.holdout_auc for e in record.epochs_scored]
    losses = [e.holdout_loss for e in record.epochs_scored]
    return {"aucs": aucs, "losses": losses, "seconds": seconds, "state": record.state}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--preset", default="default")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sets", nargs="+", default=list(SETS))
    parser.add_argument(
        "--seed", type=int, default=0, help="added to each set's data seed; the model's seed"
    )
    options = parser.parse_args()
    print(
        f"# {platform.processor() or platform.machine()}, {options.preset} model, "
        f"{options.samples} samples, {options.epochs} epochs, lr {options.lr}, seed {options.seed}"
    )
    print("| set | schedule | holdout ROC-AUC per epoch | holdout loss per epoch | last AUC | s |")
    print("| --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as folder:
        for name in options.sets:
            recipe = SETS[name]
            data = make_dataset(
                options.samples,
                input_dim=1600 if options.preset == "default" else 32,
                anomaly_rate=float(recipe["anomaly_rate"]),
                seed=int(recipe["seed"]) + options.seed,
            )
            path = save_dataset(data, Path(folder) / f"{name}.npz")
            for schedule in ("none", "cosine"):
                found = run_job(
                    path,
                    schedule,
                    preset=options.preset,
                    lr=options.lr,
                    epochs=options.epochs,
                    device=options.device,
                    seed=options.seed,
                )
                aucs = " ".join(f"{a:.4f}" for a in found["aucs"])  # type: ignore[attr-defined]
                losses = " ".join(f"{x:.3f}" for x in found["losses"])  # type: ignore[attr-defined]
                last = found["aucs"][-1]  # type: ignore[index]
                print(
                    f"| {name} | {schedule} | {aucs} | {losses} | {last:.4f} | "
                    f"{found['seconds']:.0f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
