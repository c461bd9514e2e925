"""Throughput under network latency: the streaming window against one request per batch.

What is measured: samples/s of ``fit()`` through a TCP proxy that adds a
round trip of 0, 50, 100 and 200 ms (``delay_proxy.py``; netem is not
available here), once over ``WS /v1/train/stream`` with a window of W
batches in flight and once with one REST request per batch, against a real
``corteza serve`` subprocess. The model is the tiny preset widened to 1600
inputs (10.8M parameters), whose step on this CPU is tens of ms, the order
of a GPU step of the full model, so latency matters as it would on Colab.

Why: a Colab tunnel adds 50-200 ms per round trip; one request per batch
pays it every batch, the window hides it. Goal: at 100 ms, >= 0.90 of the
0 ms throughput with the window.

Run: ``python benchmarks/bench_latency.py`` (a few minutes), ``--quick``.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from corteza.client import Client, LocalServer, make_dataset
from corteza.client.training.fit import fit
from delay_proxy import DelayProxy

RTTS_MS = (0, 50, 100, 200)
GOAL = 0.90


def rate(url: str, X: object, y: object, *, stream: bool, window: int, batch: int) -> float:
    with Client(url, retries=0) as client:
        started = time.perf_counter()
        summary = fit(
            client,
            X,
            y,
            batch_size=batch,
            stream=stream,
            window=window,  # type: ignore[arg-type]
            feedback_every=0,
        )
        return summary.samples / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=150, help="batches per measurement")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--window", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="fewer batches")
    args = parser.parse_args()
    batches = 12 if args.quick else args.batches
    data = make_dataset(batches * args.batch_size, input_dim=1600, seed=0)
    print(
        f"machine: {platform.machine()}, Python {platform.python_version()}; "
        f"{batches} batches of {args.batch_size}, window {args.window}"
    )
    with LocalServer(["--preset", "tiny", "--input-dim", "1600", "--log-level", "warning"]) as srv:
        port = int(srv.url.rsplit(":", 1)[1])
        rate(
            srv.url,
            data.X[: 4 * args.batch_size],
            data.y[: 4 * args.batch_size],
            stream=True,
            window=args.window,
            batch=args.batch_size,
        )  # warm-up
        rows = []
        for rtt in RTTS_MS:
            with DelayProxy(port, rtt=rtt / 1000) as proxy:
                url = f"http://127.0.0.1:{proxy.port}"
                streamed = rate(
                    url, data.X, data.y, stream=True, window=args.window, batch=args.batch_size
                )
                single = rate(url, data.X, data.y, stream=False, window=1, batch=args.batch_size)
            rows.append((rtt, streamed, single))
            print(
                f"  rtt {rtt:>3} ms: window {streamed:8.1f} samples/s, "
                f"one request per batch {single:8.1f}",
                flush=True,
            )
    base_stream, base_single = rows[0][1], rows[0][2]
    print(f"\n{'rtt ms':>7} {'window /s':>10} {'vs 0 ms':>8} {'request /s':>11} {'vs 0 ms':>8}")
    for rtt, streamed, single in rows:
        print(
            f"{rtt:>7} {streamed:>10.1f} {streamed / base_stream:>8.2f} {single:>11.1f} "
            f"{single / base_single:>8.2f}"
        )
    at_100 = next(s for r, s, _ in rows if r == 100) / base_stream
    verdict = "met" if at_100 >= GOAL else "NOT met"
    print(f"\ngoal: window at 100 ms >= {GOAL:.2f} of 0 ms: {verdict} ({at_100:.2f})")


if __name__ == "__main__":
    main()
