"""``corteza serve`` as a real subprocess: it serves, and SIGTERM stops it cleanly."""

from __future__ import annotations

import signal
import subprocess
import sys

import httpx
import pytest

from corteza.client import LocalServer


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
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
