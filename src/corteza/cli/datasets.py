"""``corteza datasets [list | upload PATH | rm HASH]``: the datasets a server keeps.

A data file is uploaded once (resumable, skipped when the server has it) and
named by the sha256 of its bytes; ``corteza train --on-server`` uses the same
upload and its progress bar (:func:`upload_bar`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from corteza.cli.common import (
    Command,
    DebugOption,
    Group,
    JsonOption,
    ServerOption,
    TokenOption,
    console,
    print_json,
    server_client,
)
from corteza.cli.progress import live
from corteza.client import Client
from corteza.client.uploads import UploadProgress

stdout = Console(soft_wrap=True)  # results go to stdout, progress to stderr
MIN_PREFIX = 8  # hex digits that name a dataset in `rm`

app = typer.Typer(
    name="datasets",
    help="The datasets the server keeps (uploaded once, named by their sha256).",
    cls=Group,
    invoke_without_command=True,
    no_args_is_help=False,
)


class UploadBar:
    """What an upload reports: a bar in MB and MB/s with an ETA, or one line at the end."""

    def __init__(self, progress: Progress | None, name: str) -> None:
        self.progress = progress
        self.name = name
        self.task: TaskID | None = None
        self.resumed_from: int | None = None  # None: nothing was sent (the server had it)
        self.started = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        if self.resumed_from is None:
            self.resumed_from = done
            self.started = time.monotonic()
            if self.progress is not None:  # starts at the resumed offset: no false speed
                self.task = self.progress.add_task(
                    f"uploading {escape(self.name)}", total=total, completed=done
                )
            elif done:
                console.print(f"resuming the upload at {done / 1e6:.1f} of {total / 1e6:.1f} MB")
            return
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, completed=done)


@contextmanager
def upload_bar(name: str, *, quiet: bool) -> Iterator[UploadBar]:
    """A live upload bar on a terminal (none when ``quiet`` or not a terminal)."""
    if quiet or not live(console):
        yield UploadBar(None, name)
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as progress:
        yield UploadBar(progress, name)


@app.callback()
def datasets(
    ctx: typer.Context,
    server: str | None = ServerOption,
    token: str | None = TokenOption,
    as_json: bool = JsonOption,
    debug: bool = DebugOption,
) -> None:
    """The datasets the server keeps; with no command, the list."""
    if ctx.invoked_subcommand is None:
        list_datasets(server=server, token=token, as_json=as_json, debug=debug)
    elif server is not None or token is not None or as_json or debug:
        raise typer.BadParameter(
            f"put the options after the command: corteza datasets {ctx.invoked_subcommand} ..."
        )


@app.command("list", cls=Command)
def list_datasets(
    server: str | None = ServerOption,
    token: str | None = TokenOption,
    as_json: bool = JsonOption,
    debug: bool = DebugOption,
) -> None:
    """List the server's datasets: hash, name, samples, shape, size, when added."""
    with server_client(server, token, as_json=as_json, debug=debug) as client:
        listing = client.datasets()
    if as_json:
        print_json(listing.model_dump())
        return
    if not listing.datasets:
        typer.echo("No datasets on the server: `corteza datasets upload DATA` sends one.")
        return
    table = Table("sha256", "name", "samples", "shape", "MB", "added")
    for d in listing.datasets:
        added = time.strftime("%Y-%m-%d %H:%M", time.localtime(d.added))
        shape = "×".join(str(n) for n in d.shape)
        row = (d.sha256[:16], d.name, str(d.samples), shape, f"{d.bytes / 1e6:.1f}", added)
        table.add_row(*(escape(cell) for cell in row))  # a name is the server's text, not markup
    quota = "no quota" if listing.quota_bytes is None else f"{listing.quota_bytes / 1e9:g} GB"
    stdout.print(table)
    typer.echo(f"{listing.used_bytes / 1e6:.1f} MB used of {quota}")


@app.command("upload", cls=Command)
def upload(
    path: Path = typer.Argument(..., metavar="DATA", help="A .json, .npz, .npy or .csv file."),
    server: str | None = ServerOption,
    token: str | None = TokenOption,
    as_json: bool = JsonOption,
    debug: bool = DebugOption,
) -> None:
    """Upload a data file once: skipped when the server has it, resumed where it stopped."""
    with server_client(server, token, as_json=as_json, debug=debug) as client:
        size = path.stat().st_size if path.is_file() else 0
        with upload_bar(path.name, quiet=as_json) as bar:
            sha256 = client.upload_dataset(path, progress=bar)
    sent = None if bar.resumed_from is None else size - bar.resumed_from
    if as_json:
        print_json({"sha256": sha256, "uploaded_bytes": sent or 0, "present": sent is None})
    elif sent is None:
        typer.echo(f"{path.name} is on the server already: {sha256}")
    else:
        seconds = max(time.monotonic() - bar.started, 1e-9)
        typer.echo(
            f"Uploaded {path.name} ({sent / 1e6:.1f} MB in {seconds:.1f} s, "
            f"{sent / 1e6 / seconds:.1f} MB/s): {sha256}"
        )


@app.command("rm", cls=Command)
def remove(
    sha256: str = typer.Argument(
        ..., metavar="HASH", help=f"The dataset's sha256, or its first {MIN_PREFIX}+ hex digits."
    ),
    server: str | None = ServerOption,
    token: str | None = TokenOption,
    as_json: bool = JsonOption,
    debug: bool = DebugOption,
) -> None:
    """Remove a dataset from the server."""
    with server_client(server, token, as_json=as_json, debug=debug) as client:
        full = _resolve(client, sha256.strip().lower())
        client.delete_dataset(full)
    if as_json:
        print_json({"deleted": full})
    else:
        typer.echo(f"Removed {full}")


def _resolve(client: Client, prefix: str) -> str:
    """The full sha256 a prefix names on the server (the list shows 16 digits)."""
    if len(prefix) == 64:
        return prefix
    if len(prefix) < MIN_PREFIX or any(c not in "0123456789abcdef" for c in prefix):
        raise ValueError(
            f"HASH must be a sha256 or its first {MIN_PREFIX} or more hex digits, got {prefix!r}"
        )
    found = [d.sha256 for d in client.datasets().datasets if d.sha256.startswith(prefix)]
    if len(found) != 1:
        raise ValueError(
            f"No dataset on the server starts with {prefix}"
            if not found
            else f"{len(found)} datasets start with {prefix}: give more digits"
        )
    return found[0]


__all__ = ["UploadBar", "UploadProgress", "app", "upload_bar"]
