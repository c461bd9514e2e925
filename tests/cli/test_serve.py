"""``corteza serve`` as a real subprocess: it serves, and SIGTERM stops it cleanly."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from typer.testing import CliRunner

from corteza.cli import serve_command
from corteza.cli.app import app as cli
from corteza.client import LocalServer
from corteza.server.checkpoints.store import list_checkpoints
from corteza.server.settings import Settings
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
        (["--preset", "huge"], "Invalid value for '--preset': 'huge' is not one of 'default', "),
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


def _options() -> dict[str, Any]:
    app = typer.Typer(add_completion=False)
    app.command()(serve_command.serve)
    return {param.name: param for param in typer.main.get_command(app).params if param.name}


def test_the_options_take_defaults_bounds_and_help_from_settings() -> None:
    options = _options()
    derived = [name for name in options if name in Settings.model_fields]
    assert len(derived) == 29
    for name in derived:
        field = Settings.model_fields[name]
        default = field.get_default(call_default_factory=True)
        assert options[name].default == (default or None if isinstance(default, list) else default)
    assert options["checkpoint_keep"].opts == ["--keep-checkpoints"]
    assert options["lr"].help == "AdamW learning rate (x>0)."
    assert options["max_body_mb"].help == "Body cap (MiB) of batches and checkpoint chunks (x>0)."
    assert options["max_connections"].default == 64
    assert options["notify_margin"].help == (
        "Announce a best loss this much (relative) below the last (x<1)."
    )


def test_serve_help_lists_every_option() -> None:
    result = CliRunner().invoke(cli, ["serve", "--help"])
    assert result.exit_code == 0
    assert "Usage: corteza serve [OPTIONS]" in result.output
    for option in _options().values():
        assert f" {option.opts[0]} " in result.output


@pytest.mark.parametrize(
    "args", [["--keep-checkpoints", "0"], ["--port", "65536"], ["--notify-margin", "-1"]]
)
def test_the_bounds_of_settings_are_checked_on_the_command_line(args: list[str]) -> None:
    """Click words the range (its words changed across typer releases); the flag is named."""
    result = CliRunner().invoke(cli, ["serve", *args])
    assert result.exit_code == 2
    assert f"Invalid value for '{args[0]}'" in result.output


def test_without_the_server_packages_serve_says_what_to_install() -> None:
    block = (
        "import importlib.abc, sys\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {'torch', 'fastapi', 'uvicorn', 'starlette'}:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from corteza.cli import main\n"
        "sys.argv = ['corteza', 'serve', '--help']\n"
        "main()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", block], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert result.stderr == "error: corteza serve needs torch: pip install 'corteza[server]'\n"
