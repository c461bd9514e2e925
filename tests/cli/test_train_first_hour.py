"""``corteza train`` for a new user: the server's cap, options refused up front, Ctrl-C.

Real servers on 127.0.0.1 and real ``corteza`` subprocesses; each refusal one exact
line and its exit code.
"""

from __future__ import annotations

import itertools
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from corteza.client import make_dataset, save_dataset
from corteza.server import Settings
from tests.conftest import TINY, LiveServer, start_server, stop_server
from tests.helpers import corteza


@pytest.fixture
def capped() -> Iterator[LiveServer]:
    live = start_server(Settings(model=TINY, seed=0, max_batch_samples=64))
    try:
        yield live
    finally:
        stop_server(live)


def _data(path: Path, n: int, dim: int = TINY.input_dim) -> Path:
    save_dataset(make_dataset(n, input_dim=dim, seed=1), path)
    return path


# ------------------------------------------------------------------ 1 and 9: the cap


def test_a_holdout_larger_than_the_servers_cap_is_scored(
    capped: LiveServer, tmp_path: Path
) -> None:
    data = _data(tmp_path / "d.npz", 400)
    result = corteza(
        "train",
        str(data),
        "--server",
        capped.url,
        "--holdout",
        "0.5",
        "--batch-size",
        "64",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["holdout_samples"] == 200  # > 64: scored in requests of 64
    assert 0.0 <= summary["roc_auc"] <= 1.0


def test_a_batch_size_over_the_servers_cap_is_refused_before_sending(
    capped: LiveServer, data_file: Path
) -> None:
    result = corteza("train", str(data_file), "--server", capped.url, "--batch-size", "100")
    assert result.returncode == 2
    assert result.stderr == (
        "error: --batch-size 100 exceeds this server's 64 samples per batch "
        "(its --max-batch-samples)\n"
    )
    assert capped.state.stats.total_batches == 0


# ------------------------------------------------------------------ 11 and 16: options


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--preset", "huge"], "error: unknown --preset 'huge'; choose one of default, tiny"),
        (
            ["--until-loss", "-1"],
            "error: --until-loss must be 0 or more (a loss is never negative), got -1",
        ),
    ],
)
def test_options_are_refused_up_front(data_file: Path, args: list[str], line: str) -> None:
    result = corteza("train", str(data_file), *args)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == line + "\n"


def test_local_only_options_with_a_server_are_noted(
    live_server: LiveServer, data_file: Path
) -> None:
    result = corteza(
        "train", str(data_file), "--server", live_server.url, "--preset", "tiny", "--json"
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith(
        f"note: --preset and --lr set up a local server only; {live_server.url} keeps its "
        "own model and learning rate\n"
    )


def test_one_sample_is_one_sample_and_the_summary_speaks_english(
    live_server: LiveServer, tmp_path: Path
) -> None:
    data = _data(tmp_path / "one.npz", 1)
    result = corteza("train", str(data), "--server", live_server.url)
    assert result.returncode == 0, result.stderr
    assert "Only 1 sample: training on all, none held out.\n" in result.stderr
    trend = next(
        line for line in result.stdout.splitlines() if "trend (server, last 20 batches)" in line
    )
    assert "not enough data" in trend
    for spanish in ("mejorando", "empeorando", "estable", "sin_datos"):
        assert spanish not in result.stdout


# ------------------------------------------------------------------ 13: the data's width


def test_a_local_server_takes_the_datas_width(tmp_path: Path) -> None:
    data = _data(tmp_path / "wide.npz", 40, dim=48)  # the tiny preset's width is 32
    result = corteza("train", str(data), "--preset", "tiny", "--holdout", "0", "--batch-size", "20")
    assert result.returncode == 0, result.stderr
    assert "The local server takes the data's width: --input-dim 48.\n" in result.stderr


def test_a_width_the_local_model_cannot_take_is_refused_before_a_server_starts(
    tmp_path: Path,
) -> None:
    data = _data(tmp_path / "odd.npz", 40, dim=11)  # the tiny preset has 2 attention heads
    result = corteza("train", str(data), "--preset", "tiny")
    assert result.returncode == 2
    assert result.stderr == (
        "error: A local server (--preset tiny) cannot take data 11 values wide: "
        "transformer_heads (2) must divide input_dim (11)\n"
    )


# ------------------------------------------------------------------ 6: Ctrl-C and SIGTERM


def _start_training(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    """A real ``corteza train`` with its own local server, once its first batches are in."""
    data = _data(tmp_path / "long.npz", 20_000)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "corteza",
            "train",
            str(data),
            "--preset",
            "tiny",
            "--batch-size",
            "4",
            "--holdout",
            "0",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    assert process.stderr is not None
    url = ""
    deadline = time.monotonic() + 240
    for line in process.stderr:
        if line.startswith("Live: "):
            url = line.split()[1].rstrip("/")
        if re.match(r"training [1-9]", line):  # a progress line past batch 0
            return process, url
        assert time.monotonic() < deadline, "training did not start"
    raise AssertionError(f"corteza train ended early: {process.wait()}")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_says_where_it_stopped_stops_the_local_server_and_exits_130(
    tmp_path: Path, sig: signal.Signals
) -> None:
    process, url = _start_training(tmp_path)
    process.send_signal(sig)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("interrupted at batch ")
    done, total = last.removeprefix("interrupted at batch ").split(":")[0].split("/")
    assert 0 < int(done) < int(total) == 5000
    assert last.endswith(": the local server is stopped, and what it trained with it")
    assert out == ""
    with pytest.raises(httpx.TransportError):  # the local server is gone, its port free
        httpx.get(f"{url}/health", timeout=5)


def test_json_says_interrupted(live_server: LiveServer, tmp_path: Path) -> None:
    data = _data(tmp_path / "long.npz", 20_000)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "corteza",
            "train",
            str(data),
            "--server",
            live_server.url,
            "--batch-size",
            "4",
            "--holdout",
            "0",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    deadline = time.monotonic() + 240
    while live_server.state.stats.total_batches < 3:
        assert process.poll() is None and time.monotonic() < deadline, "training did not start"
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    result = json.loads(out)
    assert result["interrupted"] is True
    assert result["total_batches"] == 5000
    assert 0 < result["batches"] < 5000


def test_the_same_command_resumes_an_interrupted_run(
    live_server: LiveServer, tmp_path: Path
) -> None:
    data = _data(tmp_path / "d.npz", 200)
    command = [
        sys.executable,
        "-m",
        "corteza",
        "train",
        str(data),
        "--server",
        live_server.url,
        "--batch-size",
        "4",
        "--holdout",
        "0",
    ]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    deadline = time.monotonic() + 240
    while live_server.state.stats.total_batches < 3:
        assert process.poll() is None and time.monotonic() < deadline, "training did not start"
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert (
        err.strip()
        .splitlines()[-1]
        .endswith(
            ": the server keeps what it trained; the same command resumes the run "
            "(--restart starts over)"
        )
    )
    stopped_at = live_server.state.stats.total_batches
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "Resuming run " in resumed.stderr
    assert 0 < stopped_at < 50
    assert live_server.state.stats.total_batches == 50  # every batch once, none twice
    again = subprocess.run([*command, "--restart", "--json"], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert live_server.state.stats.total_batches == 100  # a new run of all 50


# ------------------------------------------------------------------ 16: said once


def test_a_server_that_goes_away_is_reported_once_per_retry(tmp_path: Path) -> None:
    live = start_server(Settings(model=TINY, seed=0))
    data = _data(tmp_path / "long.npz", 20_000)
    log = tmp_path / "stderr.txt"
    with log.open("w") as err:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "corteza",
                "train",
                str(data),
                "--server",
                live.url,
                "--batch-size",
                "4",
                "--holdout",
                "0",
                "--json",
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        try:
            deadline = time.monotonic() + 240
            while live.state.stats.total_batches < 3:
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
            stop_server(live)
            while log.read_text().count("unreachable") < 2:
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=120)
    lines = [line for line in log.read_text().splitlines() if "unreachable" in line]
    assert len(lines) >= 2
    assert all(a != b for a, b in itertools.pairwise(lines)), lines


def test_train_errors_are_json_with_json(tmp_path: Path) -> None:
    result = corteza("train", str(tmp_path / "missing.npz"), "--json")
    assert result.returncode == 2
    assert json.loads(result.stdout) == {
        "error": f"No such file: {tmp_path / 'missing.npz'}",
        "error_type": "file_not_found",
        "exit_code": 2,
    }
