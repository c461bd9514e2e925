"""How fast does the default model train on this device, per precision, eager and compiled?

What is measured, all in one run on whatever device torch finds (CUDA, else the CPU,
which the output says):

* in-process: ``Trainer.train_batch`` (what the server's worker runs: the precision
  policy, the staging buffers, ``--compile``) on an already validated batch of the
  default model (73.8M parameters), at batch 64, 256 and 1024, for each precision the
  device supports (:func:`corteza.server.engine.precision.choose_precision`), eager
  and compiled. The first step of each configuration is a warm-up (it compiles, when
  compiled) and is timed apart. Samples/s is over the timed steps.
* the stream: a real ``corteza serve`` on a loopback port at the ``auto`` precision,
  and ``StreamingTrainer`` sending binary f16 bodies (``wire_dtype="f16"``, a window of
  16), as samples/s and as a share of the in-process figure at the same batch size
  and precision.
* peak memory: the device's peak allocation per configuration (CUDA), and the
  process's peak resident memory.

``--quick`` (under 3 minutes): the ``auto`` precision and fp32 only, fewer steps, the
stream at batch 256 only, and compiled only on CUDA (compiling the default model takes
minutes on a small CPU). ``--json PATH`` also writes every figure as JSON.

Run: ``python benchmarks/bench_gpu.py --quick --json out/bench_gpu.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from corteza.client import Client, LocalServer, make_dataset
from corteza.client.training.stream import StreamingTrainer
from corteza.model import ModelConfig
from corteza.server import Settings
from corteza.server.engine.device import resolve_device
from corteza.server.engine.precision import PrecisionError, choose_precision, device_capability
from corteza.server.engine.trainer import Trainer
from corteza.wire import Batch, validate_batch

BATCH_SIZES = (64, 256, 1024)
STREAM_BATCH = 256
PRECISIONS = ("fp32", "fp16", "bf16")


@dataclass
class Row:
    precision: str
    compiled: bool
    batch_size: int
    warmup_s: float  # the first step (compilation included)
    step_s: list[float]  # the timed steps
    peak_device_mb: float  # CUDA peak allocation during these steps; 0 elsewhere
    skipped_steps: int  # fp16 steps the scaler skipped
    compile_failure: str | None = None  # why compiled fell back to eager

    @property
    def samples_per_s(self) -> float:
        return self.batch_size * len(self.step_s) / sum(self.step_s)


def supported_precisions(device: torch.device, quick: bool) -> list[str]:
    """What the policy honours here; with ``quick`` only auto's choice and fp32."""
    capability = device_capability(device)
    auto = choose_precision(device.type, capability, "auto").name
    if quick:
        return sorted({auto, "fp32"}, key=PRECISIONS.index)
    found = []
    for name in PRECISIONS:
        try:
            choose_precision(device.type, capability, name)
        except PrecisionError:
            continue
        found.append(name)
    return found


def steps_for(device: torch.device, batch_size: int, quick: bool) -> int:
    if device.type == "cuda":
        return 5 if quick else 20
    if quick:
        return 1 if batch_size >= 1024 else 2
    return 3 if batch_size >= 1024 else 5


def measure(
    device: torch.device,
    precision: str,
    compiled: bool,
    batch_sizes: list[int],
    quick: bool,
    worker: ThreadPoolExecutor,
) -> list[Row]:
    """One trainer; for each batch size a warm-up step and the timed steps."""
    settings = Settings(
        model=ModelConfig(), seed=0, device=str(device), precision=precision, compile=compiled
    )
    # Built here, trained on the worker thread, as the server does (bench_throughput.py: a
    # model trained on the main thread left libgomp spin-waiting on a 2-core VM).
    trainer = Trainer(settings)
    skipped = 0

    def step(batch: Batch) -> float:
        nonlocal skipped
        started = time.perf_counter()
        result = trainer.train_batch(batch)
        skipped += result.skipped_steps
        return time.perf_counter() - started

    rows = []
    for batch_size in batch_sizes:
        data = make_dataset(batch_size, input_dim=trainer.config.input_dim, seed=batch_size)
        batch = validate_batch(data.X, data.y, input_dim=trainer.config.input_dim)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        skipped = 0
        warmup = worker.submit(step, batch).result()
        n = steps_for(device, batch_size, quick)
        times = [worker.submit(step, batch).result() for _ in range(n)]
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0
        failure = trainer.forward.failure
        rows.append(Row(precision, compiled, batch_size, warmup, times, peak, skipped, failure))
        print(
            f"  {precision} {'compiled' if compiled else 'eager'} batch {batch_size}: "
            f"{rows[-1].samples_per_s:.1f} samples/s (warm-up {warmup:.1f} s)",
            flush=True,
        )
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def measure_stream(device: torch.device, batch_size: int, batches: int) -> dict[str, Any]:
    """samples/s of ``StreamingTrainer`` with f16 bodies against a local server, auto precision."""
    args = ["--preset", "default", "--seed", "0", "--device", str(device), "--no-auth"]
    args += ["--precision", "auto", "--log-level", "warning"]
    data = make_dataset(batch_size * (batches + 1), input_dim=ModelConfig().input_dim, seed=1)
    with (
        LocalServer(args, start_timeout=300.0) as server,
        Client(server.url, timeout=600.0, wire_dtype="f16") as client,
    ):
        warm = StreamingTrainer(
            client, data.X[:batch_size], data.y[:batch_size], batch_size=batch_size
        )
        warm.run()  # the server's first step (allocations, cuDNN autotuning) is not timed
        rest_x, rest_y = data.X[batch_size:], data.y[batch_size:]
        trainer = StreamingTrainer(client, rest_x, rest_y, batch_size=batch_size, window=16)
        started = time.perf_counter()
        summary = trainer.run()
        seconds = time.perf_counter() - started
        status = client.status()
    return {
        "batch_size": batch_size,
        "batches": summary.batches,
        "samples_per_s": summary.samples / seconds,
        "transport": summary.transport,
        "max_in_flight": trainer.max_in_flight,
        "server_precision": getattr(status.estadisticas, "precision", None),
    }


def describe_machine(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "device": device.type,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = props.name
        info["capability"] = f"{props.major}.{props.minor}"
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["cuda"] = torch.version.cuda
    return info


def report(rows: list[Row], stream: dict[str, Any] | None, machine: dict[str, Any]) -> None:
    print()
    where = machine.get("gpu") or f"the CPU ({machine['cpus']} CPUs; no GPU found)"
    print(f"default model, in-process Trainer.train_batch on {where}")
    header = (
        f"{'precision':>9} {'mode':>8} {'batch':>5} {'steps':>5} {'samples/s':>10} "
        f"{'x fp32':>6} {'warm-up s':>9} {'peak MiB':>8} {'skipped':>7}"
    )
    print(header)
    print("-" * len(header))
    fp32 = {(r.compiled, r.batch_size): r.samples_per_s for r in rows if r.precision == "fp32"}
    for r in rows:
        base = fp32.get((r.compiled, r.batch_size))
        ratio = f"{r.samples_per_s / base:.2f}" if base else "-"
        mode = "compiled" if r.compiled else "eager"
        print(
            f"{r.precision:>9} {mode:>8} {r.batch_size:>5} {len(r.step_s):>5} "
            f"{r.samples_per_s:>10.1f} {ratio:>6} {r.warmup_s:>9.1f} {r.peak_device_mb:>8.0f} "
            f"{r.skipped_steps:>7}"
        )
        if r.compile_failure:
            print(f"{'':>9} compile fell back to eager: {r.compile_failure}")
    if stream is not None:
        print()
        print(
            f"stream, binary f16 bodies, batch {stream['batch_size']}, auto precision: "
            f"{stream['samples_per_s']:.1f} samples/s = {stream['share_of_in_process']:.2f} "
            f"of in-process ({stream['batches']} batches, {stream['transport']}, "
            f"{stream['max_in_flight']} in flight at most)"
        )
    print(f"peak resident memory of this process: {machine['peak_rss_mb']:.0f} MiB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="under 3 minutes")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    parser.add_argument("--batch-sizes", type=int, nargs="+", help="default: 64 256 1024")
    parser.add_argument("--no-compile", action="store_true", help="eager only")
    parser.add_argument("--no-stream", action="store_true", help="in-process only")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    machine = describe_machine(device)
    if device.type != "cuda":
        print("no CUDA device: measuring the CPU (every figure below is a CPU figure)")
    print(json.dumps(machine), flush=True)
    batch_sizes = args.batch_sizes or list(BATCH_SIZES)
    auto = choose_precision(device.type, device_capability(device), "auto").name
    modes = [False]
    if not args.no_compile and (device.type == "cuda" or not args.quick):
        modes.append(True)
    elif not args.no_compile:
        print("compiled: not measured by --quick on the CPU (compiling takes minutes here)")
    rows: list[Row] = []
    with ThreadPoolExecutor(1, thread_name_prefix="bench-trainer") as worker:
        for compiled in modes:
            for precision in supported_precisions(device, args.quick):
                if compiled and args.quick and precision != auto:
                    continue  # --quick compiles the auto precision only
                print(f"{precision} {'compiled' if compiled else 'eager'} ...", flush=True)
                rows += measure(device, precision, compiled, batch_sizes, args.quick, worker)
    stream = None
    if not args.no_stream:
        batches = (20 if args.quick else 60) if device.type == "cuda" else (4 if args.quick else 8)
        print(f"stream: a local server, {batches} batches of {STREAM_BATCH} ...", flush=True)
        stream = measure_stream(device, STREAM_BATCH, batches)
        in_process = next(
            (
                r.samples_per_s
                for r in rows
                if r.precision == auto and not r.compiled and r.batch_size == STREAM_BATCH
            ),
            None,
        )
        stream["precision"] = auto
        stream["in_process_samples_per_s"] = in_process
        stream["share_of_in_process"] = stream["samples_per_s"] / in_process if in_process else 0.0
    machine["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report(rows, stream, machine)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "machine": machine,
            "quick": args.quick,
            "in_process": [{**asdict(r), "samples_per_s": r.samples_per_s} for r in rows],
            "stream": stream,
        }
        args.json.write_text(json.dumps(document, indent=1), encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
