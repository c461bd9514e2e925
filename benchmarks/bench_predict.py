"""Inference paths and the cost of auth: JSON against safetensors, server against ONNX.

What is measured, against real ``corteza serve`` subprocesses (the tiny preset
widened to 1600 inputs, so the wire, not the model, dominates):

- ``Client.predict`` of N samples with ``wire_format="json"`` (the seed's
  format) and with the binary safetensors format both ways; bytes sent and
  received, and the median wall time of R calls;
- the same inputs scored on this machine by onnxruntime (``OnnxModel``, after
  one ``GET /v1/export/onnx``), and the largest difference from the server;
- ``GET /status`` round trips without a token (loopback) and with one.

Run: ``python benchmarks/bench_predict.py`` (about a minute), ``--quick``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable

import numpy as np

from corteza.client import Client, LocalServer, OnnxModel, make_dataset
from corteza.wire import encode_inputs

TOKEN = "bench-token-0123456789abcdef"


def median_seconds(call: Callable[[], object], repeats: int) -> float:
    call()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="256 samples, 3 repeats")
    args = parser.parse_args()
    n, repeats = (256, 3) if args.quick else (args.samples, args.repeats)
    X = make_dataset(n, input_dim=1600, seed=0).X
    print(
        f"machine: {platform.machine()}, Python {platform.python_version()}; "
        f"{n} samples of 1600 floats, median of {repeats}"
    )
    serve = ["--preset", "tiny", "--input-dim", "1600", "--log-level", "warning"]

    with LocalServer(serve) as srv:
        with Client(srv.url, wire_format="json", retries=0) as client:
            as_json = median_seconds(lambda: client.predict(X), repeats)
            reference = client.predict(X)
        with Client(srv.url, retries=0) as client:
            as_binary = median_seconds(lambda: client.predict(X), repeats)
            with tempfile.TemporaryDirectory() as folder:
                started = time.perf_counter()
                path = client.export_onnx(folder)
                export_s = time.perf_counter() - started
                model = OnnxModel(path)
                local = median_seconds(lambda: model.predict(X), repeats)
                diff = float(np.abs(model.predict(X).anomaly_prob - reference.anomaly_prob).max())
        json_bytes = len(json.dumps({"inputs": X.tolist()}))
        binary_bytes = len(encode_inputs(X))
        with Client(srv.url, retries=0) as client:
            open_status = median_seconds(lambda: [client.status() for _ in range(200)], repeats)

    with LocalServer([*serve, "--token", TOKEN]) as srv, Client(srv.url, token=TOKEN) as client:
        token_status = median_seconds(lambda: [client.status() for _ in range(200)], repeats)

    print(f"\n{'path':<34} {'request bytes':>14} {'seconds':>9} {'vs JSON':>8}")
    print(f"{'predict, JSON (seed format)':<34} {json_bytes:>14,} {as_json:>9.3f} {1.0:>8.2f}")
    print(
        f"{'predict, safetensors both ways':<34} {binary_bytes:>14,} {as_binary:>9.3f} "
        f"{as_json / as_binary:>8.1f}x"
    )
    print(f"{'onnxruntime on this machine':<34} {0:>14,} {local:>9.3f} {as_json / local:>8.1f}x")
    print(f"\nONNX export + download: {export_s:.1f} s; largest |p_onnx - p_server| = {diff:.1e}")
    per_open, per_token = open_status / 200 * 1e3, token_status / 200 * 1e3
    print(
        f"GET /status: {per_open:.2f} ms without a token, {per_token:.2f} ms with one "
        f"(ratio {per_token / per_open:.2f})"
    )


if __name__ == "__main__":
    main()
