"""One rank against two: samples/s of ``corteza serve`` and ``--nproc-per-node 2``, and
what rank 0's header and batch broadcast cost per step.

What is measured, in one run on this machine's CPU (gloo; CUDA is not used):

* samples/s through the HTTP API (``Client.train_batch``, binary bodies) of a real
  ``corteza serve --precision fp32 --device cpu`` with one process (torch's own
  threads: all the cores) and with ``--nproc-per-node 2`` (torchrun gives each rank
  ``OMP_NUM_THREADS=1``), for the tiny preset and the default model, at two batch
  sizes. The first batches are a warm-up and not timed.
* the control plane's own cost per step: rank 0 broadcasting one header on the gloo
  control group and then a batch of ``(B, D)`` float32 inputs and ``(B,)`` labels on
  the data group, timed on rank 0 over many repetitions between two real ranks
  (``torchrun --nproc-per-node 2 benchmarks/bench_distributed.py --collectives``).

On a machine with 2 cores, two ranks cannot beat one process: one process already
uses both cores (two threads), two ranks use one each and add the gradient
all-reduce (the whole model's gradients, every step) and the broadcasts. What this
shows here is the overhead; the speed-up comes from ranks that each own a GPU.

Run: ``python benchmarks/bench_distributed.py [--quick] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from corteza.client import Client, free_port

ROOT = Path(__file__).resolve().parents[1]


def _serve(
    preset: str, ranks: int, port: int, log: Path, threads: int | None
) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "corteza", "serve", "--preset", preset, "--port", str(port)]
    args += ["--precision", "fp32", "--device", "cpu", "--log-level", "warning", "--no-auth"]
    if ranks > 1:
        args += ["--nproc-per-node", str(ranks)]
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    with log.open("ab") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)


def _wait(url: str, process: subprocess.Popen[bytes], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the server did not start")


def throughput(
    preset: str, ranks: int, batches: dict[int, int], log: Path, threads: int | None = None
) -> dict[int, float]:
    """samples/s at each batch size (value: timed batches), one server for all sizes."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = _serve(preset, ranks, port, log, threads)
    figures: dict[int, float] = {}
    try:
        _wait(url, process)
        with Client(url, wire_format="binary") as client:
            dim = client.input_dim()
            rng = np.random.default_rng(0)
            for size, steps in batches.items():
                x = rng.normal(size=(size, dim)).astype(np.float32)
                y = (rng.random(size) < 0.3).astype(np.float32)
                for _ in range(2):  # warm-up
                    client.train_batch(x, y)
                started = time.perf_counter()
                for _ in range(steps):
                    client.train_batch(x, y)
                figures[size] = size * steps / (time.perf_counter() - started)
    finally:
        process.terminate()
        process.wait(120)
    return figures


def collectives_worker(sizes: list[int], width: int, repeats: int) -> None:
    """Under torchrun: rank 0 times a header + a batch broadcast; prints JSON."""
    import torch
    import torch.distributed as dist

    from corteza.server.distributed.control import (
        Op,
        broadcast_tensors,
        receive_header,
        send_header,
    )
    from corteza.server.distributed.group import DistributedGroup

    dist.init_process_group("gloo")
    control = dist.new_group(backend="gloo")
    group = DistributedGroup(
        dist.get_rank(),
        dist.get_world_size(),
        0,
        "gloo",
        torch.device("cpu"),
        datetime.timedelta(seconds=60),
        30.0,
        control=control,
    )
    out: dict[str, float] = {}
    for size in sizes:
        tensors: list[torch.Tensor | None] = [torch.ones(size, width), torch.ones(size)]
        for label, with_batch in (("header", False), ("header+batch", True)):
            for i in range(repeats + 5):
                if i == 5:
                    dist.barrier(group=control)
                    started = time.perf_counter()
                if group.leader:
                    send_header(group, Op.TRAIN, [size, 0, width, 1, 0, 0])
                else:
                    receive_header(group)
                if with_batch:
                    broadcast_tensors(group, tensors)
            dist.barrier(group=control)
            out[f"{label}@{size}"] = (time.perf_counter() - started) / repeats * 1000
    if group.leader:
        print(json.dumps(out))
    dist.destroy_process_group()


def collectives(sizes: list[int], width: int, repeats: int) -> dict[str, float]:
    args = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--standalone"]
    args += [__file__, "--collectives", "--width", str(width), "--repeats", str(repeats)]
    args += ["--sizes", *map(str, sizes)]
    result = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=ROOT)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    line = [line for line in result.stdout.splitlines() if line.startswith("{")][-1]
    figures: dict[str, float] = json.loads(line)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps, tiny model only")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--collectives", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--width", type=int, default=1600, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=50, help=argparse.SUPPRESS)
    parser.add_argument("--sizes", type=int, nargs="*", default=[64, 256], help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.collectives:
        collectives_worker(options.sizes, options.width, options.repeats)
        return
    log = Path(os.environ.get("TMPDIR", "/tmp")) / "bench_distributed.log"
    plan: dict[str, dict[int, int]] = {"tiny": {64: 40, 256: 20}}
    if not options.quick:
        plan["default"] = {32: 4, 64: 3}
    print(
        f"{platform.node()}: {os.cpu_count()} cores, {platform.processor() or platform.machine()}"
    )
    results: dict[str, Any] = {"cores": os.cpu_count(), "throughput": {}, "collectives": {}}
    print("samples/s: one process (torch's threads), one process with 1 thread, 2 ranks")
    print(f"{'model':8} {'batch':>5} {'1 proc':>9} {'1 thread':>9} {'2 ranks':>9} {'2r/1p':>6}")
    for preset, batches in plan.items():
        one = throughput(preset, 1, batches, log)
        single = throughput(preset, 1, batches, log, threads=1)
        two = throughput(preset, 2, batches, log)
        for size in batches:
            ratio = two[size] / one[size]
            print(
                f"{preset:8} {size:5d} {one[size]:9.1f} {single[size]:9.1f} {two[size]:9.1f} "
                f"{ratio:6.2f}"
            )
            results["throughput"][f"{preset}@{size}"] = {
                "one": one[size],
                "one_thread": single[size],
                "two": two[size],
            }
    widths = {"tiny": 32, "default": 1600}
    for preset in plan:
        figures = collectives([64, 256, 1024], widths[preset], 20 if options.quick else 50)
        results["collectives"][preset] = figures
        for key, ms in figures.items():
            print(f"rank 0, width {widths[preset]:4d}: {key:18} {ms:8.3f} ms per step")
    if options.json:
        options.json.parent.mkdir(parents=True, exist_ok=True)
        options.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
