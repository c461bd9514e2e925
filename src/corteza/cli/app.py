"""The typer application and its commands."""

from __future__ import annotations

import typer

from corteza._version import __version__
from corteza.cli import checkpoints, connect, inspect, make_data, predict, serve, train, watch

app = typer.Typer(
    name="corteza",
    help="Train the Corteza cognitive model on a remote GPU from your own machine.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("serve", **serve.COMMAND_OPTIONS)(serve.serve)
app.command("demo")(train.demo)
app.command("train")(train.train)
app.command("make-data")(make_data.make_data)
app.command("connect")(connect.connect)
app.command("predict")(predict.predict)
app.command("pull")(checkpoints.pull)
app.command("push")(checkpoints.push)
app.command("watch")(watch.watch)
for _command in (inspect.status, inspect.info, inspect.metrics, inspect.diagnose, inspect.feedback):
    app.command()(_command)


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
