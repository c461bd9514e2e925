"""``corteza pull [PATH]`` and ``corteza push PATH``: the model between server and PC."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TransferSpeedColumn,
)

from corteza.cli.common import (
    DebugOption,
    JsonOption,
    ServerOption,
    TokenOption,
    clear_errors,
    console,
    print_json,
)
from corteza.client import Client
from corteza.client.config import resolve_url


class PullFormat(str, Enum):
    checkpoint = "checkpoint"
    onnx = "onnx"


def pull(
    path: Path = typer.Argument(
        Path("."), help="Folder to download into (or a FILE.onnx with --format onnx)."
    ),
    file_format: PullFormat = typer.Option(
        PullFormat.checkpoint,
        "--format",
        help="checkpoint: the latest saved checkpoint; onnx: the current weights as ONNX.",
    ),
    server: str | None = ServerOption,
    token: str | None = TokenOption,
    as_json: bool = JsonOption,
    debug: bool = DebugOption,
) -> None:
    """Download the server's latest checkpoint (safetensors + JSON, sha256-checked), or ONNX."""
    with clear_errors(debug), Client(resolve_url(server), token=token) as client:
        if file_format is PullFormat.onnx:
            model = _pull_onnx(client, path, quiet=as_json)
            if as_json:
                print_json({"onnx": str(model)})
            else:
                typer.echo(f"Pulled {model}")
            return
        folder = client.pull(path)
    if as_json:
        print_json({"checkpoint": str(folder)})
    else:
        typer.echo(f"Pulled {folder}")


def _pull_onnx(client: Client, path: Path, *, quiet: bool) -> Path:
    """The export, with a spinner while the server exports and a bar while it downloads."""
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console,
        disable=quiet,
        transient=True,
    ) as progress:
        task = progress.add_task("exporting on the server", total=None)

        def on_bytes(done: int, total: int | None) -> None:
            progress.update(task, description="downloading", completed=done, total=total)

        return client.export_onnx(path, progress=on_bytes)


def push(
    path: Path = typer.Argument(..., help="A checkpoint folder (from `corteza pull`)."),
    server: str | None = ServerOption,
    token: str | None = TokenOption,
    as_json: bool = JsonOption,
    debug: bool = DebugOption,
) -> None:
    """Upload a checkpoint; the server checks it against its model and continues from it."""
    with clear_errors(debug), Client(resolve_url(server), token=token) as client:
        result = client.push(path)
    if as_json:
        print_json(result)
    else:
        typer.echo(f"Pushed {path}: the server continues at step {result['step']}")
