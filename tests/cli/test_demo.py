"""``corteza demo`` end to end: local server subprocess, training, summary."""

from __future__ import annotations

import json
import subprocess
import sys


def _demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "corteza", "demo", "--preset", "tiny", *args],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip


def test_demo_trains_and_prints_a_json_summary() -> None:
    result = _demo("--samples", "96", "--batch-size", "16", "--epochs", "2", "--json",
                   "--lr", "0.003")  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["samples"] == 192
    assert summary["batches"] == 12
    assert summary["final_loss"] < summary["first_loss"]
    assert summary["trend"] in {"mejorando", "estable", "empeorando"}
    assert 0.0 <= summary["feedback_rate"] <= 1.0


def test_demo_prints_a_progress_bar_and_a_table() -> None:
    result = _demo("--samples", "64")
    assert result.returncode == 0, result.stderr
    assert "Starting a local server (tiny model)" in result.stderr
    assert "Training summary" in result.stdout
    assert "final loss" in result.stdout


def test_demo_against_an_unreachable_server_says_so() -> None:
    result = _demo("--server", "http://127.0.0.1:9")
    assert result.returncode == 1
    assert "error: Cannot connect to http://127.0.0.1:9" in result.stderr
    assert "Traceback" not in result.stderr
