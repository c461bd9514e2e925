"""What does the HTTP JSON path cost in training throughput?

What is measured: training samples per second of the default model
(73.8M parameters) at several batch sizes, two ways, in the same run:

* in-process: ``Trainer.train_batch`` on an already validated ``Batch``, in
  a loop: the model's own speed, the ceiling. As in the server, the
  ``Trainer`` is built on the main thread and trained on one dedicated
  thread (the server's ``TrainingWorker`` does the same), so both paths get
  the same OpenMP threading. Training on the main thread instead left
  libgomp spin-waiting and made batch-32 steps 2-5x slower on the 2-core VM
  these numbers come from, which made HTTP look faster than in-process.
* HTTP: a real ``corteza serve`` (uvicorn running ``create_app``, started by
  ``corteza.client.LocalServer`` on a free loopback port) and
  ``corteza.client.Client(wire_format="json").train_batch``, sequentially:
  the time of each call includes the client's pre-flight check, encoding
  the seed's JSON body, the transfer, the server's parse and validation, the
  step and the reply, as a real client pays them. ``--wire-format binary``
  measures the client's default safetensors body instead.

Why: the seed's HTTP path reached 0.90 / 0.84 / 0.68 of the in-process
speed at batch 32 / 64 / 256; the ratio HTTP / in-process shows what the
wire costs now. Both models start from the same seed and train on the same
data. The machine is noisy (a shared 2-core VM), so the two paths alternate
step by step after one warm-up step each, and a paired median ratio (the
median over steps of in-process time / HTTP time) is printed beside the
ratio of totals. Only two models are alive at once: this process's and the
server's.

Run: ``python benchmarks/bench_throughput.py`` (a few minutes), or
``--quick`` (batch 32 and 64, 2 steps each, under a minute).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from corteza.client import Client, LocalServer, make_dataset
from corteza.model import ModelConfig
from corteza.server import Settings
from corteza.server.engine.trainer import Trainer
from corteza.wire import validate_batch

BATCH_SIZES = (32, 64, 256)
SEED_RATIOS = {32: 0.90, 64: 0.84, 256: 0.68}  # the seed's HTTP / in-process, from the issue
SERVE_ARGS = ["--preset", "default", "--seed", "0", "--device", "cpu", "--log-level", "warning"]


def default_steps(batch_size: int) -> int:
    """Timed steps per path: a batch-256 step takes seconds on a 2-core CPU."""
    return 10 if batch_size < 256 else 5


@dataclass(frozen=True)
class Row:
    batch_size: int
    local_s: list[float]  # in-process step times
    remote_s: list[float]  # HTTP call times, client encoding included
    server_s: list[float]  # the training work inside each HTTP call, as the server timed it

    def samples_per_s(self, times: list[float]) -> float:
        return self.batch_size * len(times) / sum(times)

    @property
    def ratio(self) -> float:
        return self.samples_per_s(self.remote_s) / self.samples_per_s(self.local_s)

    @property
    def paired_median_ratio(self) -> float:
        return float(np.median(np.asarray(self.local_s) / np.asarray(self.remote_s)))


def timed(step: Callable[[], object]) -> float:
    started = time.perf_counter()
    step()
    return time.perf_counter() - started


def measure(
    trainer: Trainer, worker: ThreadPoolExecutor, client: Client, batch_size: int, steps: int
) -> Row:
    """One warm-up step per path, then ``steps`` timed steps, alternating the paths."""
    data = make_dataset(batch_size, input_dim=trainer.config.input_dim, seed=batch_size)
    batch = validate_batch(data.X, data.y, input_dim=trainer.config.input_dim)

    def train_in_process() -> None:
        worker.submit(trainer.train_batch, batch).result()

    train_in_process()
    client.train_batch(data.X, data.y)
    local, remote, server = [], [], []
    for _ in range(steps):
        local.append(timed(train_in_process))
        started = time.perf_counter()
        response = client.train_batch(data.X, data.y)
        remote.append(time.perf_counter() - started)
        server.append(response.duration_seconds)
    return Row(batch_size, local, remote, server)


def describe_machine() -> str:
    return (
        f"python {platform.python_version()}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), {os.cpu_count()} CPUs, {platform.machine()}"
    )


def report(rows: list[Row], wire_format: str) -> None:
    print()
    print(f"training throughput, default model, {wire_format} bodies (ms: mean per step)")
    header = (
        f"{'batch':>5} {'steps':>5} {'in-proc/s':>10} {'HTTP/s':>8} {'HTTP/in-proc':>12} "
        f"{'paired med':>10} {'seed':>5} {'in-proc ms':>10} {'HTTP ms':>8} {'server ms':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        seed = SEED_RATIOS.get(r.batch_size)
        print(
            f"{r.batch_size:>5} {len(r.local_s):>5} {r.samples_per_s(r.local_s):>10.1f} "
            f"{r.samples_per_s(r.remote_s):>8.1f} {r.ratio:>12.2f} "
            f"{r.paired_median_ratio:>10.2f} {f'{seed:.2f}' if seed else '-':>5} "
            f"{1000 * np.mean(r.local_s):>10.0f} {1000 * np.mean(r.remote_s):>8.0f} "
            f"{1000 * np.mean(r.server_s):>9.0f}"
        )
    print()
    print("HTTP/in-proc: ratio of samples/s over all timed steps (1.00 = the wire is free)")
    print("paired med: median over steps of in-process time / HTTP time of the same step pair")
    print("seed: the seed's HTTP JSON path / in-process, from the issue")
    print("server ms: the training work inside each HTTP call, timed by the server")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--batch-sizes",
        type=int,
        nargs="+",
        help=f"batch sizes to measure ({' '.join(map(str, BATCH_SIZES))}; 32 64 with --quick)",
    )
    parser.add_argument(
        "--steps",
        type=int,
        help="timed steps per path and batch size (10 below batch 256, else 5; 2 with --quick)",
    )
    parser.add_argument(
        "--wire-format",
        choices=("json", "binary"),
        default="json",
        help="body of /train_layer2: the seed's JSON (default) or safetensors",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, under a minute")
    args = parser.parse_args(argv)
    batch_sizes = args.batch_sizes or ([32, 64] if args.quick else list(BATCH_SIZES))
    steps = args.steps or (2 if args.quick else None)

    print(describe_machine())
    print("starting corteza serve and building the in-process model ...", flush=True)
    with (
        LocalServer(SERVE_ARGS) as server,
        Client(server.url, timeout=600.0, wire_format=args.wire_format) as client,
        ThreadPoolExecutor(1, thread_name_prefix="in-process-trainer") as worker,
    ):
        trainer = Trainer(Settings(model=ModelConfig(), seed=0, device="cpu"))
        rows = []
        for batch_size in batch_sizes:
            n = steps or default_steps(batch_size)
            print(f"batch {batch_size}: warm-up, then {n} steps per path ...", flush=True)
            rows.append(measure(trainer, worker, client, batch_size, n))
    report(rows, args.wire_format)
    return 0


if __name__ == "__main__":
    sys.exit(main())
