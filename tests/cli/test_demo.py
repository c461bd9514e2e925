"""``corteza demo`` end to end: local server subprocess, training, summary."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import needs_cuda

# The learning floor's recipe: the tiny model, 5 epochs of batch 16 over 640 of 800 sensor
# windows at lr 3e-3; held-out ROC-AUC (160 windows) measured through this CLI for seeds
# 0, 1, 2: 0.961, 0.988, 0.995. The test runs seed 0 (the lowest) against a floor of 0.90.
LEARNING_RECIPE = ["--samples", "800", "--epochs", "5", "--batch-size", "16", "--lr", "0.003"]
LEARNING_FLOOR = 0.90


def _demo(*args: str, preset: str = "tiny") -> subprocess.CompletedProcess[str]:
    # One intra-op thread in the local server: a tiny model's steps only lose to OpenMP
    # workers spinning against the rest of a busy machine.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "corteza", "demo", "--preset", preset, *args],
        capture_output=True,
        text=True,
        timeout=240,
        stdin=subprocess.DEVNULL,
        env=env,
    )


def test_demo_learns_and_prints_a_json_summary() -> None:
    """Learning asserted: the held-out ROC-AUC clears a floor, not just ``0 <= auc <= 1``."""
    result = _demo(*LEARNING_RECIPE, "--seed", "0", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["samples"] == 3200  # 640 of the 800 samples, 5 times
    assert summary["batches"] == 200
    assert summary["holdout_samples"] == 160
    assert summary["roc_auc"] >= LEARNING_FLOOR, summary
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


@pytest.mark.slow
@pytest.mark.cuda
@needs_cuda
def test_the_default_demo_reaches_the_readme_auc_on_a_gpu() -> None:
    """The README's claim, as `corteza demo` runs it: the full model, 2,000 windows, 2 epochs,
    ROC-AUC ~0.98 on the 400 held out. About 75 s on a 2-core CPU, so it runs where a GPU is."""
    result = _demo("--json", preset="default")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["holdout_samples"] == 400
    assert summary["roc_auc"] >= 0.95, summary
