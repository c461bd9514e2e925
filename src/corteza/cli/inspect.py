"""``corteza status | info | metrics | diagnose | feedback``: one call each."""

from __future__ import annotations

from typing import Any

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from corteza.cli.common import (
    EXIT_BAD_INPUT,
    DebugOption,
    JsonOption,
    ServerOption,
    TokenOption,
    fail,
    print_json,
    server_client,
)


def _show(model: BaseModel, as_json: bool, title: str) -> None:
    data = model.model_dump(by_alias=True)
    if as_json:
        print_json(data)
        return
    table = Table(title=title, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in _flatten(data):
        table.add_row(key, _fmt(value))
    Console().print(table)


def _flatten(data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows.extend(_flatten(value, f"{name}."))
        else:
            rows.append((name, value))
    return rows


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list) and len(value) > 8:
        head = ", ".join(_fmt(v) for v in value[:4])
        return f"[{head}, ...] ({len(value)} values)"
    return str(value)


def status(
    server: str | None = ServerOption,
    token: str | None = TokenOption,
    as_json: bool = JsonOption,
    debug: bool = DebugOption,
) -> None:
    """Server state and training statistics."""
    with server_client(server, token, as_json=as_json, debug=debug) as client:
        _show(client.status(), as_json, "Status")


def info(
    server: str | None = ServerOption,
    token: str | None = TokenOption,
    as_json: bool = JsonOption,
    debug: bool = DebugOption,
) -> None:
    """The model's architecture and size."""
    with server_client(server, token, as_json=as_json, debug=debug) as client:
        _show(client.info(), as_json, "Model")


def metrics(
    server: str | None = ServerOption,
    token: str | None = TokenOption,
    as_json: bool = JsonOption,
    debug: bool = DebugOption,
) -> None:
    """Recent losses and the trend."""
    with server_client(server, token, as_json=as_json, debug=debug) as client:
        _show(client.metrics(), as_json, "Metrics")


def diagnose(
    server: str | None = ServerOption,
    token: str | None = TokenOption,
    as_json: bool = JsonOption,
    debug: bool = DebugOption,
) -> None:
    """Run the server's self-test (one forward pass, no training)."""
    with server_client(server, token, as_json=as_json, debug=debug) as client:
        _show(client.diagnose(), as_json, "Diagnosis")


def feedback(
    adjustments: str = typer.Argument(
        ..., metavar="ADJUSTMENTS", help="16 comma-separated floats."
    ),
    valid: bool = typer.Option(True, "--valid/--invalid", help="Whether they were validated."),
    server: str | None = ServerOption,
    token: str | None = TokenOption,
    as_json: bool = JsonOption,
    debug: bool = DebugOption,
) -> None:
    """Send dendritic feedback."""
    try:
        values = [float(v) for v in adjustments.split(",") if v.strip()]
    except ValueError:
        fail(
            f"adjustments must be comma-separated numbers, got {adjustments!r}",
            EXIT_BAD_INPUT,
            as_json=as_json,
            error_type="invalid_request",
        )
    with server_client(server, token, as_json=as_json, debug=debug) as client:
        _show(client.send_feedback(values, valid), as_json, "Feedback")
