"""How the trainer reaches a server: the stream's WebSocket (its URL, opening it, hello,
messages), the bearer token, and failures in words.

A failure to reach the server comes back as one of three exceptions the
:class:`~corteza.client.training.stream.StreamingTrainer` acts on: :class:`UnreachableError`
(wait, then try again), :class:`NoWebSocketError` (send one request per batch
instead) and :class:`ResyncError` (reconnect at once, from the server's ``next_seq``).
"""

from __future__ import annotations

import json
import ssl
from typing import Any, NoReturn

from pydantic import BaseModel, ConfigDict, ValidationError
from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidMessage,
    InvalidStatus,
    InvalidURI,
    WebSocketException,
)
from websockets.sync.client import ClientConnection, connect

from corteza._version import __version__
from corteza.client.calls import GATEWAY_STATUSES
from corteza.client.config import DEFAULT_CONNECT_TIMEOUT
from corteza.client.errors import ConnectError, ProtocolError, parse_error
from corteza.wire import PROTOCOL_VERSION

STREAM_PATH = "/v1/train/stream"
WELCOME_TIMEOUT = 30.0  # seconds for the server to answer hello
PING_INTERVAL = 20.0  # keepalive: a tunnel that dies silently is noticed within ~40 s
CLOSE_TIMEOUT = 5.0
CLOSE_REASONS = {1001: "the server is going away", 1012: "the server is restarting"}


class Welcome(BaseModel):
    """The server's answer to hello: the run it opened and where it stands."""

    model_config = ConfigDict(extra="ignore")

    protocol: str
    run_id: str
    next_seq: int
    window: int
    input_dim: int


class UnreachableError(Exception):
    """The server cannot be reached now: wait, then try again."""


class NoWebSocketError(Exception):
    """The server answered, but not with a WebSocket: send one request per batch."""


class ResyncError(Exception):
    """The server expects another seq: reconnect at once and resume from its next_seq."""


def websocket_url(url: str) -> str:
    """``http(s)://host[/prefix]`` -> ``ws(s)://host[/prefix]/v1/train/stream``."""
    base = url.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base[len("https://") :] + STREAM_PATH
    if base.startswith("http://"):
        return "ws://" + base[len("http://") :] + STREAM_PATH
    return base + STREAM_PATH


def open_stream(url: str, token: str | None) -> ClientConnection:
    """A connection to the stream of the server at ``url``."""
    try:
        return connect(
            websocket_url(url),
            additional_headers=auth_headers(token),
            user_agent_header=f"corteza/{__version__}",
            compression=None,
            open_timeout=DEFAULT_CONNECT_TIMEOUT,
            ping_interval=PING_INTERVAL,
            ping_timeout=PING_INTERVAL,
            close_timeout=CLOSE_TIMEOUT,
        )
    except InvalidStatus as exc:
        status = exc.response.status_code
        if status in GATEWAY_STATUSES:
            raise UnreachableError(f"HTTP {status}") from exc
        if status == 401:
            raise parse_error(status, _json_or_none(exc.response.body)) from exc
        raise NoWebSocketError(f"HTTP {status}") from exc
    except InvalidURI as exc:
        raise ProtocolError(f"{url} is not a URL a WebSocket can reach: {exc}") from exc
    except ssl.SSLCertVerificationError as exc:
        raise ConnectError(f"Cannot connect to {url}: {exc}") from exc
    except InvalidMessage as exc:
        if isinstance(exc.__cause__, EOFError):  # closed mid-handshake: going down?
            raise UnreachableError(describe(exc.__cause__)) from exc
        raise NoWebSocketError(describe(exc.__cause__ or exc)) from exc
    # The builtin TimeoutError (open_timeout), not corteza's TimeoutException.
    except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed) as exc:
        raise UnreachableError(describe(exc)) from exc
    except WebSocketException as exc:
        raise NoWebSocketError(describe(exc)) from exc


def say_hello(
    ws: ClientConnection, run_id: str | None, window: int, fingerprint: str | None = None
) -> Welcome:
    """Open (or resume, with ``run_id``) a run on ``ws``; the server's checked welcome.

    ``fingerprint`` (of the run's data and settings) lets the server refuse a run id
    that is another run's (``run_conflict``) rather than resume it.
    """
    hello = {
        "type": "hello",
        "protocol": PROTOCOL_VERSION,
        "run_id": run_id,
        "window": window,
        "fingerprint": fingerprint,
    }
    try:
        ws.send(json.dumps(hello))
        message = receive(ws, timeout=WELCOME_TIMEOUT)
    except TimeoutError as exc:  # the builtin: recv(timeout=...) ran out
        raise UnreachableError(f"no answer to hello in {WELCOME_TIMEOUT:.0f} s") from exc
    except (ConnectionClosed, OSError) as exc:
        raise UnreachableError(describe(exc)) from exc
    if message.get("type") == "error":
        raise_error(message)
    try:
        welcome = Welcome.model_validate(message)
    except ValidationError as exc:
        raise ProtocolError(f"unexpected answer to hello: {exc}") from exc
    if welcome.protocol.split(".")[0] != PROTOCOL_VERSION.split(".")[0]:
        raise ProtocolError(
            f"the server speaks protocol {welcome.protocol}, this client {PROTOCOL_VERSION}"
        )
    if run_id is not None and welcome.run_id != run_id:
        raise ProtocolError(f"asked for run {run_id}, the server opened {welcome.run_id}")
    return welcome


def receive(ws: ClientConnection, timeout: float | None = None) -> dict[str, Any]:
    """The server's next message, a JSON object."""
    data = ws.recv(timeout=timeout)
    if isinstance(data, bytes):
        raise ProtocolError("the server sent a binary message; expected JSON")
    try:
        message = json.loads(data)
    except ValueError as exc:
        raise ProtocolError(f"the server sent a message that is not JSON: {data[:80]!r}") from exc
    if not isinstance(message, dict):
        raise ProtocolError(f"the server sent {data[:80]!r}; expected a JSON object")
    return message


def raise_error(message: dict[str, Any]) -> NoReturn:
    """Raise the error an ``{"type": "error", ...}`` message from the server carries."""
    error_type = str(message.get("error_type") or "unknown")
    if error_type == "out_of_order":
        raise ResyncError(str(message.get("error")))
    if error_type == "unsupported_protocol":
        raise ProtocolError(str(message.get("error")))
    status = {"internal_error": 500, "run_conflict": 409, "run_busy": 409}.get(error_type, 422)
    raise parse_error(status, message)


def auth_headers(token: str | None) -> dict[str, str]:
    """The ``Authorization`` header for ``token``, if any."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def describe(exc: BaseException) -> str:
    """Why a connection failed, in words."""
    if isinstance(exc, ConnectionClosed):
        code = exc.rcvd.code if exc.rcvd is not None else None
        if code in CLOSE_REASONS:
            return CLOSE_REASONS[code]
        return "the connection dropped" + ("" if code is None else f" (close code {code})")
    text = str(exc).strip()
    return text or type(exc).__name__


def _json_or_none(body: bytes | bytearray | None) -> Any:
    try:
        return json.loads(body or b"")
    except ValueError:
        return None
