"""The user's saved server: what ``corteza connect URL --token T`` remembers.

One small JSON file, ``server.json``, in corteza's configuration directory:

- ``$CORTEZA_CONFIG_DIR`` when set (corteza's own directory: tests and
  portable setups point it anywhere);
- else ``%APPDATA%\\corteza`` on Windows, ``$XDG_CONFIG_HOME/corteza`` or
  ``~/.config/corteza`` elsewhere.

It holds a token, so it is written with mode 0600 (the directory 0700), and
atomically: written aside, flushed, renamed, so a reader (a training run
re-reading it while it waits for a restarted Colab server) sees the old file
or the new one, never half of one::

    save_server("https://abc.trycloudflare.com", token="...")
    load_saved_server()  # SavedServer(url='https://abc.trycloudflare.com', token='...')
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from corteza.client.errors import InvalidDataError
from corteza.client.files import fsync_dir

logger = logging.getLogger(__name__)

CONFIG_DIR_ENV = "CORTEZA_CONFIG_DIR"
SERVER_FILE = "server.json"
SCHEMES = ("http://", "https://")

Locator = Callable[[], tuple[str, "str | None"]]  # -> (url, token) of the server to use now


@dataclass(frozen=True)
class SavedServer:
    """A server URL and the token that goes with it (None: the server wants none)."""

    url: str
    token: str | None = None

    @property
    def masked_token(self) -> str | None:
        """The token with all but its ends hidden, for display."""
        return None if self.token is None else mask_token(self.token)


def config_dir() -> Path:
    """corteza's configuration directory (it may not exist yet)."""
    explicit = os.environ.get(CONFIG_DIR_ENV, "").strip()
    if explicit:
        return Path(explicit).expanduser()
    if sys.platform == "win32":
        appdata = os.environ.get("APPDATA", "").strip()
        base = Path(appdata) if appdata else Path.home() / "AppData" / "Roaming"
    else:
        xdg = os.environ.get("XDG_CONFIG_HOME", "").strip()
        base = Path(xdg) if xdg else Path.home() / ".config"
    return base / "corteza"


def server_file() -> Path:
    """Where the saved server lives."""
    return config_dir() / SERVER_FILE


def normalize_url(url: str) -> str:
    """``url`` without surrounding blanks or a trailing slash; refuses anything but http(s)."""
    clean = url.strip().rstrip("/")
    if not clean.lower().startswith(SCHEMES) or any(c.isspace() for c in clean):
        raise InvalidDataError(
            f"A server URL starts with http:// or https://, got {url!r}",
            error_type="invalid_url",
        )
    return clean


def mask_token(token: str) -> str:
    """``abcd...wxyz`` for a long token; ``****`` for one too short to show any of."""
    if len(token) < 12:
        return "****"
    return f"{token[:4]}...{token[-4:]}"


def load_saved_server() -> SavedServer | None:
    """The saved server, or None when none is saved.

    Raises :class:`InvalidDataError` when the file exists but cannot be read
    as a saved server, naming the file and how to fix it.
    """
    path = server_file()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _unreadable(path, str(exc)) from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise _unreadable(path, "not JSON") from exc
    if not isinstance(data, dict) or not isinstance(data.get("url"), str):
        raise _unreadable(path, 'expected {"url": ..., "token": ...}')
    token = data.get("token")
    if token is not None and not isinstance(token, str):
        raise _unreadable(path, "the token is not a string")
    try:
        url = normalize_url(data["url"])
    except InvalidDataError as exc:
        raise _unreadable(path, exc.message) from exc
    return SavedServer(url, token or None)


def save_server(url: str, token: str | None = None) -> Path:
    """Remember ``url`` (and ``token``) as the user's server; returns the file written."""
    server = SavedServer(normalize_url(url), token or None)
    path = server_file()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    data = json.dumps({"url": server.url, "token": server.token}, indent=2) + "\n"
    # mkstemp creates the file with mode 0600, before a byte of the token is in it.
    fd, partial = tempfile.mkstemp(prefix=f".{SERVER_FILE}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(partial, 0o600)
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise
    fsync_dir(path.parent)
    return path


def forget_server() -> bool:
    """Delete the saved server; False when there was none."""
    try:
        server_file().unlink()
    except FileNotFoundError:
        return False
    return True


def follow_saved_server(url: str, token: str | None) -> Locator:
    """Where the server of a run begun at ``url`` is now: the saved one, if it began there.

    A run that began at the saved server's URL follows the saved file, so
    ``corteza connect NEW_URL --token T`` in another terminal redirects a run
    that waits for a restarted Colab server (the new token comes with the new
    URL, and a new URL saved without one gets none: the old token never goes to
    another server). A run begun at any other URL stays there.
    """
    try:
        saved = load_saved_server()
    except InvalidDataError:
        saved = None
    if saved is None or saved.url != url:
        return lambda: (url, token)
    last = (url, token)

    def locate() -> tuple[str, str | None]:
        nonlocal last
        try:
            current = load_saved_server()
        except InvalidDataError as exc:  # being edited by hand: keep the last good one
            logger.warning("ignoring the saved server: %s", exc)
            return last
        if current is not None and current.url == url:
            last = (url, token if token is not None else current.token)
        elif current is not None:  # another server: its own token, never this run's old one
            last = (current.url, current.token)
        return last

    return locate


def _unreadable(path: Path, why: str) -> InvalidDataError:
    return InvalidDataError(
        f"Cannot read the saved server {path}: {why}; run `corteza connect URL` again "
        "or `corteza connect --forget`",
        error_type="invalid_settings",
    )
