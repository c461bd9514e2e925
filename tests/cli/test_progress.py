"""Training progress off a terminal: whole plain lines every few seconds, never a cut bar.

On a terminal the live bar stays.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

from rich.console import Console

from corteza.cli.progress import PLAIN_EVERY, PlainProgress
from corteza.client.training.progress import Ack, BatchReport
from tests.conftest import LiveServer
from tests.helpers import corteza

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
NUMBERS = r"loss \d\.\d{4}, p\(anomaly\) \d\.\d{3}, \d+\.\d samples/s, \d:\d\d:\d\d elapsed"


def test_train_through_a_pipe_prints_whole_progress_lines(
    live_server: LiveServer, data_file: Path
) -> None:
    result = corteza(
        "train", str(data_file), "--server", live_server.url, "--epochs", "2", "--batch-size", "16"
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("training")]
    assert re.fullmatch(rf"training 1/12 batches \(8%\), {NUMBERS}, \d:\d\d:\d\d left", lines[0])
    assert re.fullmatch(rf"training 12/12 batches \(100%\), {NUMBERS}", lines[-1])
    assert all(re.fullmatch(rf"training \d+/12 batches \(\d+%\), {NUMBERS}.*", x) for x in lines)
    assert "━" not in result.stderr and "…" not in result.stderr
    assert re.search(
        r"^Server http://\S+: [\d,]+ parameters on \w+\. Data: .+ held out; "
        r"2 epoch\(s\) of batch 16\.$",
        result.stderr,
        re.MULTILINE,
    )


def test_a_terminal_still_gets_the_live_bar(live_server: LiveServer, data_file: Path) -> None:
    env = {**os.environ, "TTY_COMPATIBLE": "1", "COLUMNS": "120"}  # rich: this is a terminal
    result = corteza("train", str(data_file), "--server", live_server.url, env=env)
    assert result.returncode == 0, result.stderr
    frames = ANSI.sub("", result.stderr).replace("\r", "\n").splitlines()
    assert any(re.match(r"training ━+ 3/3 loss \d\.\d{4}", frame) for frame in frames)
    assert not any(frame.startswith("training 3/3 batches") for frame in frames)


def test_json_keeps_the_progress_lines_back(live_server: LiveServer, data_file: Path) -> None:
    result = corteza("train", str(data_file), "--server", live_server.url, "--json")
    assert result.returncode == 0, result.stderr
    assert "training" not in result.stderr


def _report(index: int, total: int = 10, loss: float | None = 0.5) -> BatchReport:
    ack = Ack(loss=loss, anomaly_prob=0.25)
    return BatchReport(0, index, total, index * 8, None, float(index), ack)


def _plain(now: list[float], **kwargs: bool) -> tuple[PlainProgress, io.StringIO]:
    out = io.StringIO()
    console = Console(file=out, width=40, force_terminal=False)
    return PlainProgress(console, clock=lambda: now[0], **kwargs), out


def test_a_line_for_the_first_batch_then_every_few_seconds_and_the_last() -> None:
    now = [100.0]
    progress, out = _plain(now)
    for index in range(1, 11):
        progress.update(_report(index))
        now[0] += PLAIN_EVERY / 2  # a line every second batch
    progress.finish()
    printed = [int(line.split()[1].split("/")[0]) for line in out.getvalue().splitlines()]
    assert printed == [1, 3, 5, 7, 9, 10]
    assert out.getvalue().splitlines()[1] == (
        "training 3/10 batches (30%), loss 0.5000, p(anomaly) 0.250, 8.0 samples/s, "
        "0:00:03 elapsed, 0:00:07 left"
    )  # one line although the console is 40 columns wide


def test_a_run_stopped_early_ends_on_its_last_batch() -> None:
    now = [0.0]
    progress, out = _plain(now)
    progress.update(_report(1))
    progress.update(_report(2, loss=None))  # a replayed batch: the last loss stays
    progress.finish()
    assert out.getvalue().splitlines()[-1] == (
        "training 2/10 batches (20%), loss 0.5000, p(anomaly) 0.250, 8.0 samples/s, "
        "0:00:02 elapsed, 0:00:08 left"
    )


def test_quiet_prints_notes_only() -> None:
    progress, out = _plain([0.0], quiet=True)
    progress.update(_report(10))
    progress.note("server busy: waiting [1/3]")
    progress.finish()
    assert out.getvalue() == "server busy: waiting [1/3]\n"
