"""Every command's ``--help`` through the real app: it tells the truth and loses nothing."""

from __future__ import annotations

import re

import pytest
import typer
from typer.core import TyperArgument, TyperOption
from typer.testing import CliRunner

from corteza.cli import app

COMMANDS = typer.main.get_command(app).commands  # type: ignore[attr-defined]
EXTRA = re.compile(r"[\w.-]+\[[\w,-]+\]")  # corteza[plot], corteza[server,tunnel]


def render(*args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    return " ".join(result.stdout.split())  # one line: wrapping cannot split a name


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_and_argument_has_help(name: str) -> None:
    params = [p for p in COMMANDS[name].params if isinstance(p, TyperOption | TyperArgument)]
    missing = [p.name for p in params if not (p.help or "").strip()]
    assert missing == []


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_keeps_every_extra_name_and_shows_no_bool_type(name: str) -> None:
    shown = render(name)
    written = " ".join(p.help or "" for p in COMMANDS[name].params)
    for extra in EXTRA.findall(written):
        assert extra in shown, f"{name} --help lost {extra!r}"
    assert "<bool>" not in shown
    usage = shown.split("Usage: ")[1].split(" ", 3)[:3]
    assert "{" not in " ".join(usage), usage


def test_the_root_help_lists_every_command() -> None:
    shown = render()
    for name in COMMANDS:
        assert f" {name} " in shown


def test_serve_groups_its_options_in_panels() -> None:
    shown = render("serve")
    for panel in ("Network and security", "Model", "Training", "Checkpoints", "Observability"):
        assert f"╭─ {panel} ─" in shown, panel
