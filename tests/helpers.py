"""Small helpers shared by the tests."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import torch

from corteza.server.state import ServerState


def corteza(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``python -m corteza ARGS`` as a real subprocess, no stdin, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "corteza", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env=env,
    )


def serve_process(
    *args: str, log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """``python -m corteza serve ARGS`` as a real subprocess, its output appended to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "corteza", "serve", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )


def serve_checkpointed(port: int, root: Path, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    """``corteza serve --preset tiny`` on ``port``, checkpointing into ``root`` every 7 batches."""
    return serve_process(
        *("--preset", "tiny", "--port", str(port), "--checkpoint-dir", str(root)),
        *("--checkpoint-every", "7", "--log-level", "warning", *extra),
        log=log,
    )


def wait_healthy(
    url: str,
    *,
    process: subprocess.Popen[bytes] | None = None,
    timeout: float = 120,
    log: Path | None = None,
) -> None:
    """Until ``url`` answers ``/health`` with 200; fails after ``timeout`` seconds, or at
    once when ``process`` (the server) has exited, with the end of its ``log``."""
    deadline = time.monotonic() + timeout

    def tail() -> str:
        return "" if log is None else f"; its log ends:\n{log.read_text(errors='replace')[-3000:]}"

    while True:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the server at {url} exited with {process.returncode}{tail()}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"{url} did not answer /health in {timeout:g} s{tail()}"
        time.sleep(0.1)


def samples(n: int, dim: int, *, seed: int = 0, label: int | None = None) -> list[dict[str, Any]]:
    """``n`` samples in the seed's JSON format."""
    rng = random.Random(seed)
    return [
        {
            "input_data": [rng.uniform(-1, 1) for _ in range(dim)],
            "anomaly_label": label if label is not None else i % 2,
        }
        for i in range(n)
    ]


def snapshot_model(state: ServerState) -> dict[str, Any]:
    """A deep copy of weights, optimizer state and counters, for bitwise comparison."""
    trainer = state.trainer
    optimizer_state = {
        key: {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in value.items()}
        for key, value in trainer.optimizer.state_dict()["state"].items()
    }
    return {
        "weights": {k: v.detach().clone() for k, v in trainer.model.state_dict().items()},
        "optimizer": optimizer_state,
        "step": trainer.step,
        "stats": (state.stats.total_samples, state.stats.total_batches, state.stats.step),
    }


def assert_same_model(before: dict[str, Any], after: dict[str, Any]) -> None:
    """Bitwise equality of everything :func:`snapshot_model` captured."""
    assert before["step"] == after["step"]
    assert before["stats"] == after["stats"]
    assert before["weights"].keys() == after["weights"].keys()
    for name, tensor in before["weights"].items():
        assert torch.equal(tensor, after["weights"][name]), f"weight {name} changed"
    assert before["optimizer"].keys() == after["optimizer"].keys()
    for key, value in before["optimizer"].items():
        for k, v in value.items():
            other = after["optimizer"][key][k]
            if isinstance(v, torch.Tensor):
                assert torch.equal(v, other), f"optimizer state {key}.{k} changed"
            else:
                assert v == other


def wait_until(condition: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    """Poll ``condition`` until it is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        time.sleep(0.01)
