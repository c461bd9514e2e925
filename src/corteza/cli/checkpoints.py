"""``corteza pull [PATH]`` and ``corteza push PATH``: the model between server and PC."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
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
    server_client,
    target,
)
from corteza.client import Client, InvalidDataError, NotFoundError

MANIFEST = "MANIFEST.json"
STAGING_PREFIX = ".corteza-pull-"  # hidden, and removed whatever happens


class PullFormat(str, Enum):
    checkpoint = "checkpoint"
    onnx = "onnx"


def pull(
    path: Path = typer.Argument(
        Path("."),
        metavar="PATH",
        help="Folder to download into (or a FILE.onnx with --format onnx).",
    ),
    file_format: PullFormat = typer.Option(
        PullFormat.checkpoint,
        "--format",
        help="checkpoint: the latest saved checkpoint; onnx: the current weights as ONNX.",
    ),
    save: bool = typer.Option(
        False,
        "--save",
        help="Ask the server to save its current weights first (without it: only when it "
        "has no checkpoint yet).",
    ),
    server: str | None = ServerOption,
    token: str | None = TokenOption,
    as_json: bool = JsonOption,
    debug: bool = DebugOption,
) -> None:
    """Download the server's latest checkpoint (safetensors + JSON, sha256-checked), or ONNX.

    A server that has saved none yet is asked to save one first. A folder that
    already holds that checkpoint, verified, is left as it is ("already up to
    date"); a damaged copy is replaced whole.
    """
    with server_client(server, token, as_json=as_json, debug=debug) as client:
        if file_format is PullFormat.onnx:
            model = _pull_onnx(client, path, quiet=as_json)
            if as_json:
                print_json({"onnx": str(model)})
            else:
                typer.echo(f"Pulled {model}")
            return
        if save:
            client.save_checkpoint()
        try:
            folder, fresh = _pull_checkpoint(client, path)
        except NotFoundError:  # none saved yet: the README's train-then-pull
            saved = client.save_checkpoint()
            if not as_json:
                console.print(
                    f"The server had no checkpoint yet: it saved one at step {saved.step}.",
                    highlight=False,
                )
            folder, fresh = _pull_checkpoint(client, path)
    if as_json:
        print_json({"checkpoint": str(folder), "up_to_date": not fresh})
    elif fresh:
        typer.echo(f"Pulled {folder}")
    else:
        typer.echo(f"{folder} is already up to date (sha256 verified)")


def _pull_checkpoint(client: Client, dest: Path) -> tuple[Path, bool]:
    """Pull into a hidden folder inside ``dest``, then move it into place whole.

    Returns the checkpoint's folder and whether it changed. Nothing half-pulled is
    left behind: the staging folder goes, whatever happens.
    """
    if dest.exists() and not dest.is_dir():
        raise InvalidDataError(f"{dest} is a file: pull into a folder", error_type="invalid_path")
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=dest))
    try:
        pulled = client.pull(staging)
        final = dest / pulled.name
        if final.exists():
            if _verified(final) and _same_manifest(final, pulled):
                return final, False
            os.replace(final, staging / "replaced")  # a damaged or different copy goes whole
        os.replace(pulled, final)
        return final, True
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _same_manifest(one: Path, other: Path) -> bool:
    return (one / MANIFEST).read_bytes() == (other / MANIFEST).read_bytes()


def _verified(folder: Path) -> bool:
    """Whether every file ``folder``'s manifest lists is there with its sha256."""
    try:
        files = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))["files"]
        for name, meta in files.items():
            digest = hashlib.sha256()
            with (folder / Path(name).name).open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
            if digest.hexdigest() != meta["sha256"]:
                return False
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    return True


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
    path: Path = typer.Argument(
        ..., metavar="PATH", help="A checkpoint folder (from `corteza pull`)."
    ),
    server: str | None = ServerOption,
    token: str | None = TokenOption,
    as_json: bool = JsonOption,
    debug: bool = DebugOption,
) -> None:
    """Upload a checkpoint; the server checks it against its model and continues from it."""
    with clear_errors(debug, as_json=as_json):
        chosen = target(server)
        if path.name.endswith(".part") or path.name.startswith(STAGING_PREFIX):
            raise InvalidDataError(
                f"{path} is an unfinished pull, not a checkpoint: pull again",
                error_type="invalid_checkpoint",
            )
    with (
        clear_errors(debug, as_json=as_json, server=chosen),
        Client(chosen.url, token=token) as client,
    ):
        result = client.push(path)
    if as_json:
        print_json(result)
    else:
        typer.echo(f"Pushed {path}: the server continues at step {result['step']}")
