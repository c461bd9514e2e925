"""Does ``/health`` stay fast while the server trains?

What is measured: the round-trip latency of ``GET /health`` (p50, p99, max,
in ms), seen by a client that polls it every ~20 ms for ``--duration``
seconds while a second client thread posts JSON batches to
``POST /train_layer2`` back to back, so the model never stops training.

Two servers are measured, one after the other, each a real uvicorn on a
free loopback port in its own (spawned) process, with the default model
(73.8M parameters) built from the same seed:

* ``corteza``: ``corteza.server.create_app``. Its handler parses the body in
  the threadpool and hands the step to the training worker's thread, so the
  event loop stays free.
* ``baseline``: the seed's way, rebuilt here: an ``async def`` handler that
  parses the body and calls ``Trainer.train_batch`` directly on the event
  loop. It reuses corteza's ``Trainer``, ``TrainRequest`` and
  ``batch_from_rows``, so the parse and the model cost are identical and
  only the scheduling differs.

Why: a client (or a load balancer) that cannot reach ``/health`` while a
batch trains takes the server for dead. The issue's goal is a corteza p99
of at most 20 ms; the seed answered in 560 ms at p99 at batch 256 on a
2-core CPU. The body is encoded once, before the window, so the client's
own JSON encoding never delays the poller. The poller is sequential: a
stalled reply delays the next poll, which hides part of a stall
(coordinated omission), so the baseline's numbers flatter the baseline.

Run: ``python benchmarks/bench_responsiveness.py`` (about two minutes), or
``--quick`` (batch 32, 5 s windows, under a minute).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import httpx
import numpy as np
import torch
import uvicorn
from fastapi import FastAPI, Request

from corteza.client import encode_json_batch, free_port, make_dataset
from corteza.model import ModelConfig
from corteza.server import Settings, create_app
from corteza.server.engine.trainer import Trainer
from corteza.wire import BATCH_CONTENT_TYPE, TrainRequest, batch_from_rows, encode_batch

HOST = "127.0.0.1"
SERVERS = ("corteza", "baseline")
GOAL_P99_MS = 20.0
SEED_P99_MS = 560.0  # the seed at batch 256 on a 2-core CPU, from the issue
START_TIMEOUT = 300.0  # seconds; importing torch and building 73.8M parameters
Body = tuple[bytes, str]  # content and its Content-Type


def baseline_app(settings: Settings) -> FastAPI:
    """The seed's scheduling: the training step runs inside an ``async def`` handler."""
    trainer = Trainer(settings)
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"alive": True, "timestamp": datetime.now(timezone.utc).isoformat()}

    @app.post("/train_layer2")
    async def train_layer2(request: Request) -> dict[str, Any]:
        payload = TrainRequest.model_validate_json(await request.body())
        batch = batch_from_rows(
            [s.input_data for s in payload.samples],
            [s.anomaly_label for s in payload.samples],
            input_dim=trainer.config.input_dim,
            epochs=payload.epochs,
        )
        result = trainer.train_batch(batch)  # blocks the event loop for the whole step
        return {"status": "trained", "loss": result.loss, "batch_size": result.batch_size}

    return app


def serve(kind: str, port: int) -> None:
    """Entry point of the server process: build one app and run uvicorn until SIGTERM."""
    settings = Settings(model=ModelConfig(), seed=0, port=port)
    app = create_app(settings) if kind == "corteza" else baseline_app(settings)
    config = uvicorn.Config(
        app, host=HOST, port=port, log_level="warning", timeout_graceful_shutdown=60
    )
    uvicorn.Server(config).run()


class ServerProcess:
    """One server in a spawned process, ready to answer once ``__enter__`` returns."""

    def __init__(self, kind: str) -> None:
        self.port = free_port(HOST)
        self.url = f"http://{HOST}:{self.port}"
        context = multiprocessing.get_context("spawn")
        self.process = context.Process(target=serve, args=(kind, self.port), name=kind)

    def __enter__(self) -> str:
        self.process.start()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if not self.process.is_alive():
                raise RuntimeError(f"{self.process.name} exited with {self.process.exitcode}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2.0).status_code == 200:
                    return self.url
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.process.name} did not answer within {START_TIMEOUT:.0f}s")

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """SIGTERM (uvicorn shuts down gracefully), then SIGKILL if it hangs."""
        self.process.terminate()
        self.process.join(90)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


@dataclass(frozen=True)
class Result:
    server: str
    latencies_ms: np.ndarray
    batches: int  # training responses received inside the window
    window_s: float

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q))


def post_batches(url: str, body: Body, stop: threading.Event, finished: list[float]) -> None:
    """Train back to back until ``stop``; append each response's arrival time."""
    content, content_type = body
    headers = {"Content-Type": content_type}
    with httpx.Client(base_url=url, timeout=600.0) as http:
        while not stop.is_set():
            http.post("/train_layer2", content=content, headers=headers).raise_for_status()
            finished.append(time.perf_counter())


def poll_health(url: str, duration: float, interval: float) -> tuple[list[float], float, float]:
    """Poll ``/health`` for ``duration`` seconds; return latencies (ms) and the window."""
    latencies: list[float] = []
    with httpx.Client(base_url=url, timeout=600.0) as http:
        start = time.perf_counter()
        while time.perf_counter() - start < duration:
            sent = time.perf_counter()
            response = http.get("/health")
            latency = time.perf_counter() - sent
            response.raise_for_status()
            if response.json().get("alive") is not True:
                raise RuntimeError(f"/health answered {response.text}")
            latencies.append(latency * 1000)
            time.sleep(max(0.0, interval - latency))
        end = time.perf_counter()
    return latencies, start, end


def measure(kind: str, body: Body, duration: float, interval: float) -> Result:
    """Start ``kind``, keep it training, and poll ``/health`` during one window."""
    with ServerProcess(kind) as url, ThreadPoolExecutor(1) as pool:
        stop = threading.Event()
        finished: list[float] = []
        training: Future[None] = pool.submit(post_batches, url, body, stop, finished)
        while not finished:  # the first (warm-up) batch
            if training.done():
                raise RuntimeError(f"{kind}: the first batch failed") from training.exception()
            time.sleep(0.05)
        try:
            latencies, start, end = poll_health(url, duration, interval)
        finally:
            stop.set()
            training.result()  # waits for the batch in flight; re-raises a failure
    batches = sum(start <= t <= end for t in finished)
    return Result(kind, np.asarray(latencies), batches, end - start)


def describe_machine() -> str:
    return (
        f"python {platform.python_version()}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), {os.cpu_count()} CPUs, {platform.machine()}"
    )


def report(results: list[Result], batch_size: int) -> None:
    print()
    print(f"/health latency while training at batch {batch_size} (default model)")
    header = (
        f"{'server':<10} {'polls':>6} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9} "
        f"{'batches':>8} {'window s':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.server:<10} {r.latencies_ms.size:>6} {r.percentile(50):>9.1f} "
            f"{r.percentile(99):>9.1f} {r.latencies_ms.max():>9.1f} {r.batches:>8} "
            f"{r.window_s:>9.1f}"
        )
    by_name = {r.server: r for r in results}
    corteza_p99 = by_name["corteza"].percentile(99)
    baseline_p99 = by_name["baseline"].percentile(99)
    verdict = "met" if corteza_p99 <= GOAL_P99_MS else "NOT met"
    print()
    print(f"ratio baseline p99 / corteza p99: {baseline_p99 / corteza_p99:.1f}x")
    print(f"goal corteza p99 <= {GOAL_P99_MS:.0f} ms: {verdict} ({corteza_p99:.1f} ms)")
    print(f"seed reference: p99 {SEED_P99_MS:.0f} ms at batch 256 on a 2-core CPU")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, help="samples per batch (256; 32 with --quick)")
    parser.add_argument(
        "--duration", type=float, help="seconds of polling per server (30; 5 with --quick)"
    )
    parser.add_argument("--interval", type=float, default=0.02, help="seconds between polls (0.02)")
    parser.add_argument("--quick", action="store_true", help="small sizes, under a minute")
    parser.add_argument(
        "--wire-format",
        choices=("json", "binary"),
        default="json",
        help="corteza's request body (the baseline always gets the seed's JSON)",
    )
    args = parser.parse_args(argv)
    batch_size = args.batch_size or (32 if args.quick else 256)
    duration = args.duration or (5.0 if args.quick else 30.0)

    print(describe_machine())
    data = make_dataset(batch_size, input_dim=ModelConfig().input_dim, seed=0)
    json_body = (encode_json_batch(data.X, data.y), "application/json")
    bodies = {"baseline": json_body, "corteza": json_body}
    if args.wire_format == "binary":
        bodies["corteza"] = (encode_batch(data.X, data.y), BATCH_CONTENT_TYPE)
    for kind, (content, content_type) in bodies.items():
        print(f"{kind} body: {batch_size} samples, {len(content) / 1e6:.1f} MB of {content_type}")
    results = []
    for kind in SERVERS:
        print(f"{kind}: starting, then polling /health for {duration:.0f} s ...", flush=True)
        results.append(measure(kind, bodies[kind], duration, args.interval))
    report(results, batch_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
