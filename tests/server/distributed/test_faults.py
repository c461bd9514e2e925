"""A rank that dies ends the group; torchrun restarts it; nothing is lost or doubled.

SIGKILL rank 1 in the middle of ``corteza train``: rank 0's next collective
fails, it exits, torchrun starts both ranks again, rank 0 resumes from the
newest checkpoint and the client, reconnecting by itself, resumes by
``(run_id, seq)``. The launcher holds the tunnel (the cloudflared stand-in),
so its public URL and the token outlive the restart. Then SIGKILL the
launcher: no rank, and no cloudflared, outlives it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from corteza.client import make_dataset, save_dataset
from tests.fakes import FAKE_URL, put_fake_cloudflared_on_path
from tests.server.distributed.cluster import Cluster, alive

pytestmark = pytest.mark.distributed

SAMPLES, EPOCHS, BATCH = 160, 2, 4  # 40 batches per epoch, 80 in all


def _status(url: str, token: str, host: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"}
    if host is not None:
        headers["Host"] = host
    return httpx.get(f"{url}/status", headers=headers, timeout=5)


def _progress(url: str, token: str) -> int:
    try:
        return int(_status(url, token).json()["estadisticas"]["total_batches"])
    except (httpx.HTTPError, KeyError, ValueError):
        return -1


def _wait(condition: object, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_killing_a_follower_restarts_the_group_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data.npz"
    save_dataset(make_dataset(SAMPLES, input_dim=32, seed=6), data)
    root = tmp_path / "ckpt"
    put_fake_cloudflared_on_path(tmp_path / "bin", monkeypatch)
    record = tmp_path / "cloudflared.json"
    monkeypatch.setenv("FAKE_CLOUDFLARED_RECORD", str(record))
    tunnel = ("--tunnel", "cloudflared")
    options = ("--checkpoint-dir", str(root), "--checkpoint-every", "5", *tunnel)
    cluster = Cluster(tmp_path, *options, env=dict(os.environ))
    client: subprocess.Popen[str] | None = None
    try:
        cluster.wait_healthy()
        token = cluster.token()
        assert f"corteza connect {FAKE_URL} --token {token}" in cluster.text()
        cloudflared = json.loads(record.read_text())["pid"]
        first = cluster.rank_pids()
        client = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "corteza",
                "train",
                str(data),
                "--server",
                cluster.url,
                "--epochs",
                str(EPOCHS),
                "--batch-size",
                str(BATCH),
                "--holdout",
                "0",
                "--feedback-every",
                "3",
                "--token",
                token,
                "--json",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        _wait(lambda: _progress(cluster.url, token) >= 23 or client.poll() is not None, "stuck")
        assert client.poll() is None, "the client finished before the kill"
        os.kill(first[1], signal.SIGKILL)
        out, err = client.communicate(timeout=300)
        assert client.returncode == 0, err
        summary = json.loads(out)
        bearer = {"Authorization": f"Bearer {token}"}
        run = httpx.get(f"{cluster.url}/v1/runs/{summary['run_id']}", headers=bearer, timeout=10)
        status = _status(cluster.url, token).json()
        second = cluster.rank_pids()
        assert set(second.values()).isdisjoint(first.values()), "the group was not restarted"
        assert run.json()["next_seq"] == EPOCHS * SAMPLES // BATCH  # no gap
        assert status["estadisticas"]["total_muestras"] == SAMPLES * EPOCHS  # no duplicate
        assert summary["samples"] == SAMPLES * EPOCHS
        assert status["distributed"]["world_size"] == 2
        # the same tunnel, its host still let in by the restarted rank 0
        assert json.loads(record.read_text())["pid"] == cloudflared and alive(cloudflared)
        assert _status(cluster.url, token, urlsplit(FAKE_URL).netloc).status_code == 200
        assert _status(cluster.url, token, "elsewhere.example").status_code == 400

        cluster.process.send_signal(signal.SIGKILL)  # the launcher dies without a word
        cluster.process.wait(30)
        left = [*second.values(), cloudflared]
        _wait(lambda: not any(alive(pid) for pid in left), "a rank or the tunnel outlived", 60)
    finally:
        if client is not None:
            client.kill()
        cluster.kill()
