"""``corteza connect URL [--token T]``: save the server every other command uses by default."""

from __future__ import annotations

import os

import typer
from rich.markup import escape

from corteza.cli.common import (
    EXIT_BAD_INPUT,
    DebugOption,
    JsonOption,
    clear_errors,
    console,
    fail,
    print_json,
    with_scheme,
)
from corteza.client import Client, CortezaError, InvalidRequestError
from corteza.client.config import URL_ENV
from corteza.client.saved_server import (
    forget_server,
    load_saved_server,
    mask_token,
    save_server,
    server_file,
)

CHECK_TIMEOUT = 15.0  # seconds per call of the check; a cold Colab tunnel is slow


def connect(
    url: str | None = typer.Argument(
        None, metavar="URL", help="The server's URL, e.g. the one the Colab cell printed."
    ),
    token: str | None = typer.Option(
        None,
        "--token",
        help="The token the server printed. Without it, connecting again to the saved URL "
        "keeps the saved token.",
    ),
    check: bool = typer.Option(
        True,
        "--check/--no-check",
        help="Ask the server for /health and /info before saving; a refused token is not "
        "saved (an unreachable server is, with a warning).",
    ),
    show: bool = typer.Option(False, "--show", help="Print the saved server (token masked)."),
    forget: bool = typer.Option(False, "--forget", help="Delete the saved server."),
    as_json: bool = JsonOption,
    debug: bool = DebugOption,
) -> None:
    """Save the server to train on; `corteza train` and the others then use it by default."""
    if show + forget + (url is not None) != 1:
        fail("give a URL to save, or --show, or --forget", EXIT_BAD_INPUT, as_json=as_json)
    with clear_errors(debug, as_json=as_json):
        if show:
            _show(as_json)
        elif forget:
            _forget(as_json)
        else:
            assert url is not None
            _save(with_scheme(url, origin=None), token, check=check, as_json=as_json)


def _save(url: str, token: str | None, *, check: bool, as_json: bool) -> None:
    description: str | None = None
    problem: str | None = None
    if token is None:
        saved = load_saved_server()
        if saved is not None and saved.url == url and saved.token is not None:
            token = saved.token
            if not as_json:
                console.print(f"Keeping the saved token {saved.masked_token}.", highlight=False)
    if check:
        try:
            description = _describe(url, token)
        except InvalidRequestError as exc:  # a wrong token: saving it would only fail later
            fail(
                f"{exc}; not saved (--no-check saves without asking the server)",
                EXIT_BAD_INPUT,
                as_json=as_json,
                error_type=exc.error_type,
            )
        except CortezaError as exc:  # unreachable now; a Colab cell may still be starting
            problem = str(exc)
    path = save_server(url, token)
    if as_json:
        print_json(
            {
                "url": url,
                "token": _masked(token),
                "path": str(path),
                "checked": check,
                "reachable": None if not check else problem is None,
                "server": description,
                "error": problem,
            }
        )
        return
    if problem is not None:
        console.print(
            f"[yellow]warning:[/] {escape(problem)}; saved anyway", highlight=False, soft_wrap=True
        )
    if description is None:
        typer.echo(f"Saved {url} (not checked)")
    else:
        typer.echo(f"Connected to {url}: {description}")
    console.print(
        f"Saved in {escape(str(path))}; `corteza train DATA` now trains there.", highlight=False
    )
    _warn_if_overridden()


def _describe(url: str, token: str | None) -> str:
    """``corteza 0.1.0, 73,766,290 parameters on GPU``: what the server says it is."""
    with Client(url, token=token, timeout=CHECK_TIMEOUT, retries=0) as client:
        client.health()
        info = client.info()
        device = client.status().estadisticas.dispositivo
    return (
        f"corteza {info.version}, {info.arquitectura.parametros_totales:,} parameters on {device}"
    )


def _show(as_json: bool) -> None:
    saved = load_saved_server()
    path = server_file()
    if as_json:
        data = None if saved is None else {"url": saved.url, "token": saved.masked_token}
        print_json(None if data is None else {**data, "path": str(path)})
        return
    if saved is None:
        console.print("No saved server; `corteza connect URL [--token T]` saves one.")
        return
    typer.echo(f"Server: {saved.url}")
    typer.echo(f"Token:  {saved.masked_token or 'none'}")
    typer.echo(f"File:   {path}")
    _warn_if_overridden()


def _forget(as_json: bool) -> None:
    try:
        saved = load_saved_server()
    except CortezaError:  # unreadable: forget it all the same
        saved = None
    forgot = forget_server()
    if as_json:
        print_json({"forgot": forgot, "url": None if saved is None else saved.url})
    elif forgot:
        typer.echo(f"Forgot the saved server{'' if saved is None else f' {saved.url}'}")
    else:
        console.print("No saved server to forget.")


def _warn_if_overridden() -> None:
    for name in URL_ENV:
        if os.environ.get(name, "").strip():
            console.print(
                f"[yellow]note:[/] ${name} is set and comes before the saved server",
                highlight=False,
            )
            return


def _masked(token: str | None) -> str | None:
    return None if token is None else mask_token(token)
