"""``corteza serve`` as a real subprocess: it serves, and SIGTERM stops it cleanly."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from corteza.client import LocalServer
from corteza.server.checkpoints.store import list_checkpoints
from tests.helpers import samples


def test_serve_answers_and_stops_on_sigterm() -> None:
    server = LocalServer(["--preset", "tiny", "--input-dim", "48", "--lr", "0.01"])
    server.start()
    try:
        info = httpx.get(f"{server.url}/info", timeout=10).json()
        assert info["input_dim"] == 48
        assert info["model_config"]["lstm_hidden"] == 16  # the tiny preset's
        process = server._process
        assert process is not None
        process.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal it caught.
        assert process.wait(timeout=30) == -signal.SIGTERM
        assert "server stopped after 0 batches" in server.log_tail(50)
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input-dim", "30"], "error: transformer_heads (8) must divide input_dim (30)\n"),
        (["--lr", "-1"], "error: lr: Input should be greater than 0\n"),
        (["--preset", "huge"], "Invalid value for '--preset'"),
    ],
)
def test_serve_refuses_impossible_settings(args: list[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "corteza", "serve", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_saves_a_checkpoint_before_exit(tmp_path: Path, sig: signal.Signals) -> None:
    root = tmp_path / "ckpt"
    server = LocalServer(["--preset", "tiny", "--checkpoint-dir", str(root)])
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for seq in range(3):
                body = {"samples": samples(2, 32, seed=seq), "run_id": "sig", "seq": seq}
                assert http.post("/train_layer2", json=body).status_code == 200
        process = server._process
        assert process is not None
        process.send_signal(sig)
        process.wait(timeout=60)
    finally:
        server.stop()
    (checkpoint,) = list_checkpoints(root)
    state = json.loads((checkpoint / "state.json").read_text())["state"]
    assert state["runs"][0]["next_seq"] == 3
    assert state["stats"]["total_samples"] == 6
