"""``corteza serve`` refuses what it cannot serve in one line, exit 2, before building a model."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import torch

from corteza.client import free_port
from tests.helpers import corteza


def serve(*args: str) -> tuple[int, str]:
    result = corteza("serve", "--preset", "tiny", "--port", str(free_port()), *args, timeout=120)
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("device", "line"),
    [
        (
            "tpu",
            "error: --device tpu: not a device torch knows; use auto, cpu, cuda, cuda:N or mps",
        ),
        pytest.param(
            "cuda",
            "error: --device cuda: no CUDA GPU on this machine; use --device cpu or auto",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU"),
        ),
    ],
)
def test_a_device_this_machine_lacks(device: str, line: str) -> None:
    assert serve("--device", device) == (2, line + "\n")


def test_a_checkpoint_dir_that_is_a_file(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("x")
    assert serve("--checkpoint-dir", str(path)) == (
        2,
        f"error: --checkpoint-dir {path} is a file, not a folder\n",
    )


def test_a_checkpoint_dir_that_cannot_be_written(tmp_path: Path) -> None:
    """Root writes through permission bits, so as root the folder is a read-only tmpfs."""
    folder = tmp_path / "ro"
    folder.mkdir()
    mounted = False
    if os.geteuid() == 0:
        mount = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)],
            capture_output=True,
            text=True,
        )
        if mount.returncode != 0:
            pytest.skip(f"cannot mount a read-only tmpfs here: {mount.stderr.strip()}")
        mounted = True
    else:
        folder.chmod(0o500)
    try:
        assert serve("--checkpoint-dir", str(folder)) == (
            2,
            f"error: --checkpoint-dir {folder} is not writable\n",
        )
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], check=True)
        else:
            folder.chmod(0o700)


def test_a_port_in_use_is_refused_before_the_model_is_built() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = corteza("serve", "--preset", "tiny", "--port", str(port), timeout=120)
    assert result.returncode == 2
    assert result.stdout + result.stderr == (
        f"error: --port {port}: 127.0.0.1:{port} is taken (Address already in use); "
        "stop what listens there or pass another --port\n"
    )


def test_port_0_prints_the_port_it_bound() -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "corteza", "serve", "--preset", "tiny", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        text=True,
    ) as server:
        try:
            assert server.stdout is not None
            first = server.stdout.readline()  # the banner, once the model is up
            match = re.fullmatch(
                r"corteza server: (http://127\.0\.0\.1:(\d+)) \(docs at .*\)\n", first
            )
            assert match is not None, first
            assert int(match[2]) != 0
            assert httpx.get(f"{match[1]}/health", timeout=10).status_code == 200
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
