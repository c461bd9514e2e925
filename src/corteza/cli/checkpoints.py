"""``corteza pull [PATH]`` and ``corteza push PATH``: the model between server and PC."""

from __future__ import annotations

from pathlib import Path

import typer

from corteza.cli.common import (
    DebugOption,
    JsonOption,
    ServerOption,
    TokenOption,
    clear_errors,
    print_json,
)
from corteza.client import Client
from corteza.client.config import resolve_url


def pull(
    path: Path = typer.Argument(Path("."), help="Folder to download into."),
    server: str | None = ServerOption, token: str | None = TokenOption,
    as_json: bool = JsonOption, debug: bool = DebugOption,
) -> None:  # fmt: skip
    """Download the server's latest checkpoint (safetensors + JSON, sha256-checked)."""
    with clear_errors(debug), Client(resolve_url(server), token=token) as client:
        folder = client.pull(path)
    if as_json:
        print_json({"checkpoint": str(folder)})
    else:
        typer.echo(f"Pulled {folder}")


def push(
    path: Path = typer.Argument(..., help="A checkpoint folder (from `corteza pull`)."),
    server: str | None = ServerOption, token: str | None = TokenOption,
    as_json: bool = JsonOption, debug: bool = DebugOption,
) -> None:  # fmt: skip
    """Upload a checkpoint; the server checks it against its model and continues from it."""
    with clear_errors(debug), Client(resolve_url(server), token=token) as client:
        result = client.push(path)
    if as_json:
        print_json(result)
    else:
        typer.echo(f"Pushed {path}: the server continues at step {result['step']}")
