"""What the commands share: options, the server to talk to, errors as one clear line."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup, TyperOption

from corteza.client import (
    Client,
    ConnectError,
    CortezaError,
    InvalidDataError,
    InvalidRequestError,
)
from corteza.client.config import DEFAULT_URL, URL_ENV
from corteza.client.saved_server import load_saved_server, normalize_url, server_file

logger = logging.getLogger(__name__)

console = Console(stderr=True)  # progress and messages; results go to stdout

# Exit codes, documented in the README.
EXIT_OK = 0
EXIT_FAILURE = 1  # the server failed or could not be reached
EXIT_BAD_INPUT = 2  # the data or the options were refused
EXIT_TARGET_MISSED = 3  # --until-loss was not reached
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as shells report it

HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[\w.-]+):\d{1,5}(/\S*)?")  # no scheme
NO_SERVER = "No server configured: run `corteza serve`, or `corteza connect URL`"


def with_scheme(url: str, *, origin: str | None = "--server") -> str:
    """``url`` normalised; a bare ``host:port`` gets ``http://``, and a note says so.

    Anything else that is not an http(s) URL exits 2 at once (no retries first).
    ``origin`` names where the URL came from in those two lines.
    """
    clean = url.strip()
    if HOST_PORT.fullmatch(clean):
        clean = f"http://{clean}"
        console.print(
            f"note: {'' if origin is None else f'{origin} '}{escape(url.strip())} has no "
            f"scheme: assuming {escape(clean)}",
            highlight=False,
            soft_wrap=True,
        )
    try:
        return normalize_url(clean)
    except InvalidDataError as exc:
        fail(exc.message if origin is None else f"{origin}: {exc.message}", EXIT_BAD_INPUT)


def _server_option(value: str | None) -> str | None:
    return None if value is None else with_scheme(value)


ServerOption = typer.Option(
    None,
    "--server",
    callback=_server_option,
    help="Server URL (http:// is assumed for host:port). Default: $CORTEZA_URL, "
    "$COLAB_SERVER_URL, then the server saved by `corteza connect`; else a local one.",
)
TokenOption = typer.Option(
    None,
    "--token",
    help="Bearer token. Default: $CORTEZA_TOKEN, else the token saved by `corteza connect` "
    "with that server.",
)
JsonOption = typer.Option(False, "--json", help="Print one JSON result for scripts.")
DebugOption = typer.Option(False, "--debug", help="Show tracebacks on errors.")


USAGE_REQUIRED = re.compile(r"\{(.+)\}(\.\.\.)?")  # typer's usage for a required argument


def _plain_help(params: list[Any]) -> None:
    """Help texts as plain text (not rich markup) and flags without a ``<bool>`` type."""
    for param in params:
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""
        help_text = getattr(param, "help", None)
        if help_text and not getattr(param, "_corteza_plain", False):
            param.help = escape(help_text)
            param._corteza_plain = True


class Command(TyperCommand):
    """typer's command, with help that says what it means.

    Help texts are plain text, not rich markup, so ``pip install 'corteza[plot]'``
    keeps its extra; a flag shows no ``<bool>`` as if it took a value; the usage
    line reads ``DATA``, not ``{data}``.
    """

    def format_help(self, ctx: Any, formatter: Any) -> None:
        _plain_help(self.get_params(ctx))
        super().format_help(ctx, formatter)

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except typer.BadParameter as exc:  # typer checks choices with pydantic: drop its prefix
            exc.message = exc.message.removeprefix("Value error, ")
            raise

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = super().collect_usage_pieces(ctx)
        return [USAGE_REQUIRED.sub(lambda m: m[1].upper() + (m[2] or ""), p) for p in pieces]


class Group(TyperGroup):
    """The root command, with :class:`Command`'s plain help."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        _plain_help(self.get_params(ctx))
        super().format_help(ctx, formatter)


@dataclass(frozen=True)
class Target:
    """The server a command talks to, and where that choice came from (for error messages)."""

    url: str
    origin: str | None  # "--server", "$CORTEZA_URL", "saved by `corteza connect` in PATH"; None

    def unreachable(self, exc: ConnectError) -> str:
        """The one line for a server that did not answer, naming where its URL came from."""
        if self.origin is None:
            return f"{NO_SERVER} (nothing answers at {self.url})"
        if self.origin == "--server":
            return str(exc)
        return f"{exc} (the URL is {self.origin})"


def target(explicit: str | None) -> Target:
    """The server to use: ``--server``, the environment, the saved one, else the default."""
    if explicit:
        return Target(explicit.rstrip("/"), "--server")
    for name in URL_ENV:
        value = os.environ.get(name, "").strip()
        if value:
            return Target(with_scheme(value, origin=f"${name}"), f"from ${name}")
    saved = load_saved_server()
    if saved is not None:
        return Target(saved.url, f"saved by `corteza connect` in {server_file()}")
    return Target(DEFAULT_URL, None)


def server_url(explicit: str | None) -> str | None:
    """The server to use, or None for an embedded local server."""
    chosen = target(explicit)
    return None if chosen.origin is None else chosen.url


def fail(
    message: str, code: int, *, as_json: bool = False, error_type: str | None = None
) -> NoReturn:
    """Exit ``code`` after one line on stderr (with ``as_json``: one JSON object on stdout)."""
    if as_json:
        print_json({"error": message, "error_type": error_type, "exit_code": code})
    else:
        console.print(f"[red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def clear_errors(
    debug: bool, *, as_json: bool = False, server: Target | None = None
) -> Iterator[None]:
    """Turn library errors into one line and an exit code (a traceback with --debug).

    ``server``, when given, words a connection failure by where its URL came from.
    """
    try:
        yield
    except typer.Exit:
        raise
    except (InvalidDataError, InvalidRequestError, ValueError) as exc:
        if debug:
            raise
        fail(str(exc), EXIT_BAD_INPUT, as_json=as_json, error_type=_error_type(exc, "invalid"))
    except CortezaError as exc:
        if debug:
            raise
        message = str(exc)
        if server is not None and isinstance(exc, ConnectError):
            message = server.unreachable(exc)
        fail(message, EXIT_FAILURE, as_json=as_json, error_type=_error_type(exc, "failed"))


@contextmanager
def server_client(
    server: str | None, token: str | None, *, as_json: bool, debug: bool, **options: Any
) -> Iterator[Client]:
    """A client of the server :func:`target` chooses (``options`` go to :class:`Client`);
    any failure, choosing or talking to it, is one line (JSON with --json) and an exit code."""
    with clear_errors(debug, as_json=as_json):
        chosen = target(server)
    with (
        clear_errors(debug, as_json=as_json, server=chosen),
        Client(chosen.url, token=token, **options) as client,
    ):
        yield client


def _error_type(exc: Exception, default: str) -> str:
    found = getattr(exc, "error_type", None)
    if isinstance(found, str):
        return found
    if isinstance(exc, ConnectError):
        return "unreachable"
    return default


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, default=float))
