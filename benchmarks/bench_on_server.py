"""Training over a home uplink: stream every epoch, or upload once and train on the server.

What is measured: through ``delay_proxy.py`` limiting the client's uplink to
2.5 MB/s (20 Mbit/s) with a 50 ms round trip, the tiny model widened to 1600
inputs trains ``--epochs`` epochs of the same data against a real ``corteza
serve`` subprocess, two ways:

* ``streamed``: ``fit()`` over ``WS /v1/train/stream``, every sample crossing
  the link once per epoch (the client's default wire dtype);
* ``on-server``: ``Client.upload_dataset`` (tus, once) then a job
  (``POST /v1/jobs``) followed by polling, no data crossing the link again.

For each: wall time and bytes the client sent through the proxy. The job's
own samples/s (from its epochs' ``seconds``) is compared with the same
batches trained in this process by a :class:`Trainer` with nothing around it
(the in-process baseline, measured in the same run). By default the server
has a data folder and no checkpoint folder, so both sides do the same work;
``--checkpoints`` adds the job's saves (every epoch's end and every
``--checkpoint-every`` batches) to its time.

Goals (issue "Upload once, train on the server"): the job at >= 0.95 of
in-process samples/s; the on-server wall time bound by one upload, not by
``epochs`` of them.

Run: ``python benchmarks/bench_on_server.py`` (a few minutes), ``--quick``.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from corteza.client import Client, LocalServer, make_dataset, save_dataset
from corteza.client.training.fit import fit
from corteza.server import Settings
from corteza.server.engine.trainer import Trainer
from corteza.wire import Batch
from corteza.wire.model_config import ModelConfig
from delay_proxy import DelayProxy

UPLINK = 2.5e6  # bytes/s: a 20 Mbit/s home uplink
RTT = 0.05
JOB_GOAL = 0.95


def in_process_rate(X: np.ndarray, y: np.ndarray, batch: int, epochs: int) -> float:
    """Samples/s of the same batches through a bare Trainer (a few warm-up batches first)."""
    trainer = Trainer(Settings(model=ModelConfig.tiny(input_dim=X.shape[1]), seed=0, lr=1e-3))
    for _ in range(5):
        trainer.train_batch(Batch(X[:batch], y[:batch], 1))
    started = time.perf_counter()
    for _ in range(epochs):
        for start in range(0, len(X), batch):
            trainer.train_batch(Batch(X[start : start + batch], y[start : start + batch], 1))
    return epochs * len(X) / (time.perf_counter() - started)


def streamed(url: str, X: np.ndarray, y: np.ndarray, batch: int, epochs: int) -> int:
    with Client(url, retries=0) as client:
        summary = fit(client, X, y, batch_size=batch, epochs=epochs, feedback_every=0)
    return int(summary.samples)


def on_server(url: str, path: Path, batch: int, epochs: int) -> tuple[int, float]:
    """Upload, start a job, follow it; its samples trained and its own training seconds."""
    with Client(url, retries=0) as client:
        sha = client.upload_dataset(path)
        job = client.start_job(sha, epochs=epochs, batch_size=batch, holdout=0.0, feedback_every=0)
        for record in client.watch_job(job.id, interval=0.2):
            last = record
    assert last.state == "finished", last
    return last.samples_trained, sum(epoch.seconds for epoch in last.epochs_scored)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="512 samples, 2 epochs")
    parser.add_argument(
        "--checkpoints",
        action="store_true",
        help="give the server a checkpoint folder: the job's rate then includes its saves",
    )
    args = parser.parse_args()
    samples, epochs = (512, 2) if args.quick else (args.samples, args.epochs)
    data = make_dataset(samples, input_dim=1600, seed=0)
    X, y = np.asarray(data.X, np.float32), np.asarray(data.y, np.float32)
    print(
        f"machine: {platform.machine()}, Python {platform.python_version()}; {samples} samples "
        f"x 1600, {epochs} epochs, batch {args.batch_size}; uplink {UPLINK / 1e6:g} MB/s, "
        f"RTT {RTT * 1000:g} ms; checkpoints {'on' if args.checkpoints else 'off'}"
    )
    baseline = in_process_rate(X, y, args.batch_size, epochs)
    with tempfile.TemporaryDirectory() as tmp:
        path = save_dataset(data, Path(tmp) / "data.npz")
        server_args = ["--preset", "tiny", "--input-dim", "1600", "--log-level", "warning"]
        if args.checkpoints:  # the job then saves at every epoch's end and every interval
            server_args += ["--checkpoint-dir", str(Path(tmp) / "checkpoints")]
        else:
            server_args += ["--data-dir", str(Path(tmp) / "datasets")]
        with LocalServer(server_args) as server:
            port = int(server.url.rsplit(":", 1)[1])
            rows = []
            with DelayProxy(port, rtt=RTT, up_bandwidth=UPLINK) as proxy:
                url = f"http://127.0.0.1:{proxy.port}"
                started = time.perf_counter()
                trained = streamed(url, X, y, args.batch_size, epochs)
                rows.append(("streamed", time.perf_counter() - started, proxy.bytes_up, trained))
            with DelayProxy(port, rtt=RTT, up_bandwidth=UPLINK) as proxy:
                url = f"http://127.0.0.1:{proxy.port}"
                started = time.perf_counter()
                trained, job_seconds = on_server(url, path, args.batch_size, epochs)
                rows.append(("on-server", time.perf_counter() - started, proxy.bytes_up, trained))
        file_mb = path.stat().st_size / 1e6
    one_upload = file_mb * 1e6 / UPLINK
    print(f"data file: {file_mb:.1f} MB (one upload at the uplink's rate: {one_upload:.1f} s)")
    print(f"{'':10} {'wall s':>8} {'MB sent':>8} {'samples':>8}")
    for name, wall, sent, trained in rows:
        print(f"{name:10} {wall:8.1f} {sent / 1e6:8.1f} {trained:8d}")
    job_rate = rows[1][3] / job_seconds
    share = job_rate / baseline
    speedup = rows[0][1] / rows[1][1]
    print(f"in-process: {baseline:.0f} samples/s; the job: {job_rate:.0f} samples/s")
    print(
        f"on-server / in-process samples/s: {share:.2f} (goal >= {JOB_GOAL}: "
        f"{'met' if share >= JOB_GOAL else 'NOT met'}); streamed wall / on-server wall: "
        f"{speedup:.2f}; on-server wall - one upload - the job's training: "
        f"{rows[1][1] - one_upload - job_seconds:.1f} s"
    )


if __name__ == "__main__":
    main()
