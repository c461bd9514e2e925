"""``corteza train --plot FILE --tensorboard-dir DIR``: real runs, real files."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tensorboardX.proto.event_pb2 import Event

from tests.conftest import LiveServer
from tests.helpers import corteza

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk, after checking the signature."""
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_SIGNATURE
    assert head[12:16] == b"IHDR"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the TensorBoard event files of ``logdir``, by tag: (step, value)."""
    found: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(logdir.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):  # TFRecord: length, its crc, the record, the record's crc
            (length,) = struct.unpack_from("<Q", data, offset)
            event = Event.FromString(data[offset + 12 : offset + 12 + length])
            offset += 12 + length + 4
            for value in event.summary.value:
                found.setdefault(value.tag, []).append((event.step, value.simple_value))
    return found


def test_a_run_leaves_its_loss_plot_and_tensorboard_scalars(
    live_server: LiveServer, data_file: Path, tmp_path: Path
) -> None:
    plot, logdir = tmp_path / "plots" / "loss.png", tmp_path / "tb"
    result = corteza(
        "train",
        str(data_file),
        "--server",
        live_server.url,
        "--batch-size",
        "8",
        "--holdout",
        "0",
        "--plot",
        str(plot),
        "--tensorboard-dir",
        str(logdir),
    )
    assert result.returncode == 0, result.stderr
    assert f"Loss plot of 15 batches saved to {plot}" in result.stderr
    assert f"TensorBoard scalars written to {logdir}" in result.stderr
    assert png_size(plot) == (960, 540)
    assert plot.stat().st_size > 20_000
    found = scalars(logdir)
    assert [step for step, _ in found["loss"]] == list(range(1, 16))
    assert [step for step, _ in found["samples_per_second"]] == list(range(1, 16))
    recent = live_server.state.stats.recent_losses
    assert [value for _, value in found["loss"]] == pytest.approx(list(recent), rel=1e-6)
    assert all(value > 0 for _, value in found["samples_per_second"])


def test_ctrl_c_still_saves_the_plot(
    live_server: LiveServer, data_file: Path, tmp_path: Path
) -> None:
    plot = tmp_path / "loss.svg"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "corteza",
            "train",
            str(data_file),
            "--server",
            live_server.url,
            "--batch-size",
            "1",
            "--epochs",
            "50",
            "--plot",
            str(plot),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    deadline = time.monotonic() + 60
    while live_server.state.stats.total_batches < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode != 0
    assert "Loss plot of " in err
    assert plot.read_text().startswith("<?xml")


@pytest.mark.parametrize(
    ("option", "module", "message"),
    [
        (
            "--plot=loss.png",
            "matplotlib",
            "error: matplotlib is not installed: pip install 'corteza[plot]'",
        ),
        (
            "--tensorboard-dir=tb",
            "tensorboardX",
            "error: tensorboardX is not installed: pip install 'corteza[tensorboard]'",
        ),
    ],
)
def test_a_missing_extra_is_one_line_before_training(
    live_server: LiveServer,
    data_file: Path,
    tmp_path: Path,
    option: str,
    module: str,
    message: str,
) -> None:
    # The package is hidden by one that fails to import, as if it were not installed.
    hidden = tmp_path / "hidden" / module
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    env = {**os.environ, "PYTHONPATH": str(hidden.parent)}
    result = corteza("train", str(data_file), "--server", live_server.url, option, env=env)
    assert result.returncode == 2
    assert result.stderr == f"{message}\n"
    assert live_server.state.stats.total_samples == 0


def test_a_plot_format_matplotlib_cannot_write_is_refused(
    live_server: LiveServer, data_file: Path
) -> None:
    result = corteza("train", str(data_file), "--server", live_server.url, "--plot", "loss.txt")
    assert result.returncode == 2
    assert result.stderr == "error: --plot cannot write .txt: name a .png, .svg or .pdf file\n"
    assert live_server.state.stats.total_samples == 0
