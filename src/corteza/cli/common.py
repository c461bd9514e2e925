"""What the commands share: options, the server to talk to, errors as one clear line."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from corteza.client import CortezaError, InvalidDataError, InvalidRequestError
from corteza.client.config import configured_url

logger = logging.getLogger(__name__)

console = Console(stderr=True)  # progress and messages; results go to stdout

# Exit codes, documented in the README.
EXIT_OK = 0
EXIT_FAILURE = 1  # the server failed or could not be reached
EXIT_BAD_INPUT = 2  # the data or the options were refused
EXIT_TARGET_MISSED = 3  # --until-loss was not reached

ServerOption = typer.Option(
    None, "--server", help="Server URL (default: $CORTEZA_URL, $COLAB_SERVER_URL, or local)."
)
TokenOption = typer.Option(None, "--token", help="Bearer token (default: $CORTEZA_TOKEN).")
JsonOption = typer.Option(False, "--json", help="Print one JSON result for scripts.")
DebugOption = typer.Option(False, "--debug", help="Show tracebacks on errors.")


def server_url(explicit: str | None) -> str | None:
    """The server to use, or None for an embedded local server."""
    return explicit or configured_url()


def fail(message: str, code: int) -> NoReturn:
    console.print(f"[red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def clear_errors(debug: bool) -> Iterator[None]:
    """Turn library errors into one line and an exit code (a traceback with --debug)."""
    try:
        yield
    except typer.Exit:
        raise
    except (InvalidDataError, InvalidRequestError, ValueError) as exc:
        if debug:
            raise
        fail(str(exc), EXIT_BAD_INPUT)
    except CortezaError as exc:
        if debug:
            raise
        fail(str(exc), EXIT_FAILURE)


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, default=float))
