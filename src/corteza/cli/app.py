"""The typer application and its commands."""

from __future__ import annotations

import typer

from corteza._version import __version__
from corteza.cli import (
    checkpoints,
    connect,
    datasets,
    inspect,
    jobs,
    make_data,
    predict,
    serve,
    train,
    watch,
)
from corteza.cli.common import Command, Group

app = typer.Typer(
    name="corteza",
    help="Train the Corteza cognitive model on a remote GPU from your own machine.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=Group,
)
app.command("serve", **serve.COMMAND_OPTIONS)(serve.serve)
app.command("demo", cls=Command)(train.demo)
app.command("train", cls=Command)(train.train)
app.command("make-data", cls=Command)(make_data.make_data)
app.command("connect", cls=Command)(connect.connect)
app.command("predict", cls=Command)(predict.predict)
app.command("pull", cls=Command)(checkpoints.pull)
app.command("push", cls=Command)(checkpoints.push)
app.command("watch", cls=Command)(watch.watch)
app.add_typer(datasets.app)
app.add_typer(jobs.app)
for _command in (inspect.status, inspect.info, inspect.metrics, inspect.diagnose, inspect.feedback):
    app.command(cls=Command)(_command)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"corteza {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Train the Corteza cognitive model on a remote GPU from your own machine."""


def main() -> None:
    app()
