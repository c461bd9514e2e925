"""``corteza demo`` end to end: local server subprocess, training, summary."""

from __future__ import annotations

import json
import re
import subprocess
import sys


def _demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "corteza", "demo", "--preset", "tiny", *args],
        capture_output=True,
        text=True,
        timeout=240,
        stdin=subprocess.DEVNULL,
    )


def test_demo_trains_and_prints_a_json_summary() -> None:
    result = _demo(
        "--samples", "100", "--batch-size", "16", "--epochs", "2", "--json", "--lr", "0.003"
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["samples"] == 160  # 80 of the 100 samples, twice
    assert summary["batches"] == 10
    assert summary["holdout_samples"] == 20
    assert 0.0 <= summary["roc_auc"] <= 1.0
    assert summary["final_loss"] < summary["first_loss"]
    assert summary["trend"] in {"mejorando", "estable", "empeorando"}
    assert 0.0 <= summary["feedback_rate"] <= 1.0


def test_demo_prints_a_progress_bar_and_a_table() -> None:
    result = _demo("--samples", "64", "--epochs", "1")
    assert result.returncode == 0, result.stderr
    assert "No server configured: starting a local one on 127.0.0.1" in result.stderr
    live = re.search(
        r"Live: (http://127\.0\.0\.1:\d+)/ in a browser, "
        r"or corteza watch --server (\S+)\n",
        result.stderr,
    )
    assert live is not None and live.group(1) == live.group(2)
    assert "Training summary" in result.stdout
    assert "held-out ROC-AUC (13 samples)" in result.stdout


def test_demo_against_an_unreachable_server_says_so() -> None:
    result = _demo("--server", "http://127.0.0.1:9")
    assert result.returncode == 1
    assert result.stderr.startswith("error: Cannot connect to http://127.0.0.1:9: ")
    assert "Traceback" not in result.stderr
