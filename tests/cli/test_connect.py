"""``corteza connect``: the saved server, its file, and the URL resolution that reads it."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from corteza._version import __version__
from corteza.cli.connect import connect
from corteza.client import InvalidDataError, free_port
from corteza.client.saved_server import (
    SavedServer,
    config_dir,
    load_saved_server,
    mask_token,
    save_server,
    server_file,
)
from tests.conftest import LiveServer

TOKEN = "s3cr3t-token-0123456789abcdef"

app = typer.Typer()
app.command("connect")(connect)


@app.callback()
def _root() -> None:
    """Keeps ``connect`` a named subcommand, as in ``corteza connect``."""


@pytest.fixture(autouse=True)
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CORTEZA_CONFIG_DIR", str(tmp_path / "config"))
    for name in ("CORTEZA_URL", "COLAB_SERVER_URL", "CORTEZA_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "config"


def corteza(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["connect", *args])
    return result.exit_code, result.stdout, result.stderr


def test_connect_checks_the_server_and_saves_it_readable_by_the_user_only(
    live_server: LiveServer, config: Path
) -> None:
    code, out, err = corteza(live_server.url + "/", "--token", TOKEN)
    assert code == 0, err
    parameters = live_server.state.trainer.parameter_count
    assert (
        out == f"Connected to {live_server.url}: corteza {__version__}, {parameters:,} "
        "parameters on CPU\n"
    )
    path = config / "server.json"
    assert json.loads(path.read_text()) == {"url": live_server.url, "token": TOKEN}
    if sys.platform != "win32":
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [p.name for p in config.iterdir()] == ["server.json"]  # nothing left aside
    assert load_saved_server() == SavedServer(live_server.url, TOKEN)


def test_show_masks_the_token(config: Path) -> None:
    save_server("https://abc.trycloudflare.com", token=TOKEN)
    code, out, _ = corteza("--show")
    assert code == 0
    assert out.splitlines() == [
        "Server: https://abc.trycloudflare.com",
        "Token:  s3cr...cdef",
        f"File:   {config / 'server.json'}",
    ]
    assert TOKEN not in out
    code, out, _ = corteza("--show", "--json")
    assert json.loads(out) == {
        "url": "https://abc.trycloudflare.com",
        "token": "s3cr...cdef",
        "path": str(config / "server.json"),
    }


def test_show_says_when_nothing_is_saved() -> None:
    code, out, err = corteza("--show")
    assert (code, out) == (0, "")
    assert err.strip() == "No saved server; `corteza connect URL [--token T]` saves one."


def test_forget_deletes_the_saved_server(config: Path) -> None:
    save_server("http://10.0.0.5:8000")
    code, out, _ = corteza("--forget")
    assert (code, out) == (0, "Forgot the saved server http://10.0.0.5:8000\n")
    assert not (config / "server.json").exists()
    assert load_saved_server() is None
    code, _, err = corteza("--forget")
    assert (code, err.strip()) == (0, "No saved server to forget.")


def test_an_unreachable_server_is_saved_anyway_with_a_warning(config: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, out, err = corteza(url)
    assert code == 0
    assert out == f"Saved {url} (not checked)\n"
    assert err.startswith(f"warning: Cannot connect to {url}: ")
    assert "saved anyway" in err
    assert load_saved_server() == SavedServer(url, None)


def test_no_check_saves_without_asking(config: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, out, err = corteza(url, "--token", TOKEN, "--no-check")
    assert code == 0
    assert out == f"Saved {url} (not checked)\n"
    assert "warning" not in err
    assert load_saved_server() == SavedServer(url, TOKEN)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["abc.trycloudflare.com"],
            "error: A server URL starts with http:// or https://, got 'abc.trycloudflare.com'",
        ),
        ([], "error: give a URL to save, or --show, or --forget"),
        (["--show", "--forget"], "error: give a URL to save, or --show, or --forget"),
        (["http://h:1", "--show"], "error: give a URL to save, or --show, or --forget"),
    ],
)
def test_bad_arguments_are_one_line(args: list[str], message: str, config: Path) -> None:
    code, _, err = corteza(*args)
    assert code == 2
    assert err.strip() == message
    assert not config.exists()


def test_an_environment_url_is_noted_as_coming_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLAB_SERVER_URL", "http://elsewhere:8000")
    save_server("http://h:8000")
    _, _, err = corteza("--show")
    assert err.strip() == "note: $COLAB_SERVER_URL is set and comes before the saved server"


# ---------------------------------------------------------------- the file itself


def test_saving_again_replaces_the_file_whole(config: Path) -> None:
    save_server("http://a:1", token=TOKEN)
    save_server("http://b:2")
    assert load_saved_server() == SavedServer("http://b:2", None)
    assert sorted(os.listdir(config)) == ["server.json"]


def test_an_unreadable_file_is_a_clear_error(config: Path) -> None:
    config.mkdir()
    (config / "server.json").write_text("{not json")
    with pytest.raises(InvalidDataError) as error:
        load_saved_server()
    assert str(error.value) == (
        f"Cannot read the saved server {config / 'server.json'}: not JSON; run "
        "`corteza connect URL` again or `corteza connect --forget`"
    )
    code, _, _ = corteza("--forget")  # forgetting works all the same
    assert code == 0
    assert not (config / "server.json").exists()


def test_the_config_dir_follows_the_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CORTEZA_CONFIG_DIR")
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("XDG_CONFIG_HOME", "/xdg")
    assert config_dir() == Path("/xdg/corteza")
    monkeypatch.delenv("XDG_CONFIG_HOME")
    assert config_dir() == Path.home() / ".config" / "corteza"
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv("APPDATA", "/appdata")
    assert config_dir() == Path("/appdata/corteza")
    monkeypatch.setenv("CORTEZA_CONFIG_DIR", "/mine")
    assert server_file() == Path("/mine/server.json")


def test_tokens_are_masked_but_for_their_ends() -> None:
    assert mask_token(TOKEN) == "s3cr...cdef"
    assert mask_token("short") == "****"
