"""``corteza serve``: run the training server on this machine.

The command's options are built from the server's ``Settings`` (see
:mod:`corteza.cli.serve_command`), which needs the server's packages; this
entry point imports them only when ``corteza serve`` runs, so the light,
torch-free install still runs every other command.
"""

from __future__ import annotations

from typing import Any

import typer

# The arguments, --help included, go untouched to the real command.
COMMAND_OPTIONS: dict[str, Any] = {
    "context_settings": {"allow_extra_args": True, "ignore_unknown_options": True},
    "add_help_option": False,
}
SERVER_EXTRA = "pip install 'corteza[server]'"


def serve(ctx: typer.Context) -> None:
    """Run the training server (the seed's routes plus /docs)."""
    try:
        from corteza.cli.serve_command import run
    except ModuleNotFoundError as exc:
        if exc.name is not None and exc.name.partition(".")[0] == "corteza":
            raise  # a fault of this package, not a missing extra
        missing = exc.name or str(exc)
        typer.echo(f"error: corteza serve needs {missing}: {SERVER_EXTRA}", err=True)
        raise typer.Exit(2) from exc
    run(ctx.args, ctx.command_path)
