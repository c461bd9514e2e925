"""A token-protected live server for the hostile-input suite, and its credentials."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from corteza.server import Settings
from tests.conftest import TINY, LiveServer, start_server, stop_server

# Letters at both ends, so that ``TOKEN.swapcase()`` is always a different token.
TOKEN = f"Tk{secrets.token_urlsafe(32)}Tk"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def secured_settings(checkpoint_dir: Path) -> Settings:
    """The tiny model behind a token, with checkpoints on, so every route can answer 2xx."""
    return Settings(
        model=TINY, seed=0, lr=1e-3, device="cpu", token=TOKEN, checkpoint_dir=checkpoint_dir
    )


@pytest.fixture(scope="module")
def secured_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(secured_settings(tmp_path_factory.mktemp("checkpoints")))
    try:
        yield live
    finally:
        stop_server(live)


@pytest.fixture(scope="module")
def secured_http(secured_server: LiveServer) -> Iterator[httpx.Client]:
    """A client of ``secured_server`` that sends the token."""
    with secured_server.http(headers=AUTH) as http:
        yield http
