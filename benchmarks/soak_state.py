"""Soak of the state that grows per request: hellos, batches, abandoned uploads.

What is measured, on a real ``corteza serve --preset tiny`` with a checkpoint
directory: 10,000 stream hellos with a null run id (each opens a run and
leaves), 5,000 batches over REST in 50 runs of 100, and 1,000 checkpoint
uploads started with one chunk and never committed, interleaved in ten
rounds. Measured: the server's resident memory
(VmRSS), its run book (``/status`` ``runs``), the newest checkpoint's
``state.json`` size and the bytes under ``.uploads``, at the start, after a
quarter, half and three quarters of the rounds, and at the end. Goal: flat
once the bounds are reached.

Run: ``python benchmarks/soak_state.py`` (several minutes on 2 cores);
``--scale 0.1`` for a quick look.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from websockets.sync.client import connect

from corteza.client import free_port
from corteza.server.checkpoints.store import list_checkpoints
from corteza.wire import PROTOCOL_VERSION

INPUT_DIM = 32  # the tiny preset's


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the full counts")
    args = parser.parse_args()
    rounds = 10
    hellos = int(10_000 * args.scale) // rounds
    runs = max(1, int(50 * args.scale) // rounds)
    uploads = int(1_000 * args.scale) // rounds
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ckpt"
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = (Path(tmp) / "server.log").open("wb")
        server = subprocess.Popen(
            [
                *(sys.executable, "-m", "corteza", "serve", "--preset", "tiny"),
                *("--port", str(port), "--checkpoint-dir", str(root)),
                *("--checkpoint-every", "100", "--log-level", "warning"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        http = httpx.Client(base_url=url, timeout=60)
        deadline = time.monotonic() + 120
        while True:
            try:
                if http.get("/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        ws_url = url.replace("http", "ws") + "/v1/train/stream"
        row = [0.1] * INPUT_DIM
        samples = [{"input_data": row, "anomaly_label": i % 2} for i in range(4)]
        rows: list[tuple[str, float, int, int, int, int]] = []

        def measure(label: str) -> None:
            assert http.post("/v1/checkpoint").status_code == 200
            newest = list_checkpoints(root)[0]
            rows.append(
                (
                    label,
                    rss_mb(server.pid),
                    int(http.get("/status").json()["runs"]),
                    (newest / "state.json").stat().st_size,
                    folder_bytes(root / ".uploads"),
                    len(list((root / ".uploads").iterdir())) if (root / ".uploads").exists() else 0,
                )
            )

        measure("start")
        started = time.monotonic()
        run_number = 0
        for round_ in range(rounds):
            for _ in range(hellos):
                with connect(ws_url) as ws:
                    ws.send(
                        json.dumps({"type": "hello", "protocol": PROTOCOL_VERSION, "run_id": None})
                    )
                    ws.recv()
            for _ in range(runs):
                run_number += 1
                for seq in range(100):
                    body = {"samples": samples, "run_id": f"soak-{run_number}", "seq": seq}
                    assert http.post("/train_layer2", json=body).status_code == 200
            for _ in range(uploads):
                response = http.post("/v1/checkpoint/uploads")
                if response.status_code != 200:
                    continue  # a cap on uploads in progress refused it: that is the bound
                upload_id = response.json()["upload_id"]
                http.put(
                    f"/v1/checkpoint/uploads/{upload_id}/state.json",
                    content=b"x" * 4096,
                    headers={"Content-Range": "bytes 0-4095/8192"},
                )
            if round_ + 1 in (rounds // 4, rounds // 2, 3 * rounds // 4):
                measure(f"{(round_ + 1) * 100 // rounds}%")
        measure("end")
        seconds = time.monotonic() - started
        http.close()
        server.terminate()
        server.wait(60)
        log.close()
    total_hellos, total_batches = hellos * rounds, runs * rounds * 100
    print(
        f"{total_hellos} hellos, {total_batches} batches in {runs * rounds} runs, "
        f"{uploads * rounds} abandoned uploads in {seconds:.0f} s"
    )
    print("| point | RSS MB | run book | state.json bytes | .uploads bytes | uploads |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label, rss, book, state, upload_bytes, count in rows:
        print(f"| {label} | {rss:.1f} | {book} | {state:,} | {upload_bytes:,} | {count} |")


if __name__ == "__main__":
    main()
