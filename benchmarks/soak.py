"""Soak: SIGKILL the server N times (default 20) during one `corteza train` run.

What is measured: after the client finishes by itself, the server's record
of the run (``GET /v1/runs/{id}``: seqs ``0 .. next_seq - 1`` are in the
weights) and its batch count (``/status``) against the batches the run
needed: batches lost (``needed - next_seq``), batches applied twice
(``total_batches - next_seq``), samples trained against dataset x epochs,
and checkpoints on disk that fail to verify. Goal: 0 / 0 / 0. Every process
is real: ``corteza serve`` with a checkpoint directory, ``corteza train``
streaming to it, SIGKILL at random moments, a restart on the same port.

Run: ``python benchmarks/soak.py`` (a few minutes), ``--kills 5`` to shorten.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from corteza.client import free_port, make_dataset, save_dataset
from corteza.server.checkpoints.store import CheckpointError, list_checkpoints, verify_checkpoint


def serve(port: int, root: Path, every: int, log: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "corteza",
        "serve",
        "--preset",
        "tiny",
        "--port",
        str(port),
        "--checkpoint-dir",
        str(root),
        "--checkpoint-every",
        str(every),
        "--log-level",
        "warning",
    ]
    with log.open("ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)


def get(url: str) -> dict[str, object] | None:
    try:
        response = httpx.get(url, timeout=2)
        return response.json() if response.status_code == 200 else None  # type: ignore[no-any-return]
    except httpx.HTTPError:
        return None


def wait_healthy(url: str) -> float:
    started = time.monotonic()
    while get(f"{url}/health") is None:
        if time.monotonic() - started > 120:
            raise RuntimeError("the server did not come back")
        time.sleep(0.05)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--checkpoint-every", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    total = args.epochs * -(-args.samples // args.batch_size)
    work = Path(tempfile.mkdtemp(prefix="corteza-soak-"))
    data, root, log = work / "data.npz", work / "ckpt", work / "server.log"
    save_dataset(make_dataset(args.samples, input_dim=32, seed=args.seed), data)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = serve(port, root, args.checkpoint_every, log)
    wait_healthy(url)
    client = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "corteza",
            "train",
            str(data),
            "--server",
            url,
            "--epochs",
            str(args.epochs),
            "--batch-size",
            str(args.batch_size),
            "--holdout",
            "0",
            "--feedback-every",
            "0",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    points = sorted(rng.sample(range(total // 20, total * 19 // 20), args.kills))
    kills, restarts = 0, []
    started = time.monotonic()
    for point in points:
        while client.poll() is None:
            status = get(f"{url}/status")
            if status is not None and status["estadisticas"]["total_batches"] >= point:  # type: ignore[index]
                break
            time.sleep(0.01)
        if client.poll() is not None:
            break
        server.send_signal(signal.SIGKILL)
        server.wait()
        kills += 1
        server = serve(port, root, args.checkpoint_every, log)
        restarts.append(wait_healthy(url))
    out, err = client.communicate(timeout=600)
    seconds = time.monotonic() - started
    summary = json.loads(out) if client.returncode == 0 else {}
    record = get(f"{url}/v1/runs/{summary.get('run_id')}") or {"next_seq": 0}
    status = get(f"{url}/status") or {"estadisticas": {}}
    server.send_signal(signal.SIGTERM)
    server.wait(60)
    next_seq = int(record["next_seq"])  # type: ignore[call-overload]
    trained = int(status["estadisticas"].get("total_batches", 0))  # type: ignore[union-attr]
    lost = total - next_seq
    twice = trained - next_seq
    corrupt = 0
    for checkpoint in list_checkpoints(root):
        try:
            verify_checkpoint(checkpoint)
        except CheckpointError:
            corrupt += 1
    samples = status["estadisticas"].get("total_muestras")  # type: ignore[union-attr]
    print(
        f"client exit {client.returncode} after {seconds:.1f} s; {kills} SIGKILLs at batches "
        f"{points}; restart to healthy {min(restarts):.1f}-{max(restarts):.1f} s"
    )
    print(f"batches needed {total}, trained {trained}: lost {lost}, applied twice {twice}")
    print(
        f"samples trained {samples} (expected {args.samples * args.epochs}); "
        f"corrupt checkpoints on disk {corrupt}"
    )
    ok = client.returncode == 0 and lost == twice == corrupt == 0
    print("goal 0 / 0 / 0:", "met" if ok else f"NOT met\n{err[-2000:]}")


if __name__ == "__main__":
    main()
