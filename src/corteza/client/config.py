"""Where the client finds its server: arguments, then the environment."""

from __future__ import annotations

import os

from corteza.client.saved_server import load_saved_server

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = 300.0  # seconds; a large batch on a CPU takes a while
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_RETRIES = 3
URL_ENV = ("CORTEZA_URL", "COLAB_SERVER_URL")  # the second is the seed client's
TOKEN_ENV = "CORTEZA_TOKEN"


def configured_url() -> str | None:
    """The server URL from the environment, else the saved one (`corteza connect`), or None."""
    for name in URL_ENV:
        value = os.environ.get(name, "").strip()
        if value:
            return value.rstrip("/")
    saved = load_saved_server()
    return None if saved is None else saved.url


def resolve_url(url: str | None) -> str:
    """An explicit URL, else the environment, else the local default."""
    return (url or configured_url() or DEFAULT_URL).rstrip("/")


def resolve_token(token: str | None, url: str | None = None) -> str | None:
    """The token given, else CORTEZA_TOKEN, else the saved server's token for its own URL."""
    explicit = token or os.environ.get(TOKEN_ENV)
    if explicit:
        return explicit
    saved = load_saved_server()
    if saved is not None and url is not None and saved.url == url.rstrip("/"):
        return saved.token
    return None
