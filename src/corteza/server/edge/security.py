"""Who may talk to the server: the bearer token, the Host allow-list, the Origin check.

Token policy (:func:`resolve_token`): a server bound to loopback runs without a
token unless one is given, so the seed's token-free TypeScript client keeps
working on one machine; a server reachable beyond loopback (another bind
address, or a tunnel) always has one, generated when none is given.

With a token, every request needs ``Authorization: Bearer <token>`` except
``GET /health`` and the dashboard's shell (``GET /`` and ``GET /static/...``),
which hold no data: the page reads the token from the URL fragment (``#token=``),
which browsers never send, and puts it in the header of its own requests. A
token in the query string is refused even when right: URLs end up in logs.

The Host allow-list (loopback names, the bind address, ``allowed_hosts``) stops
DNS rebinding; on a wildcard bind (``0.0.0.0``) any IP address is accepted too,
since a rebinding page always sends its own host name, so a LAN user reaching the
server by address needs nothing, and by name passes ``--allowed-host NAME``. A
request with an ``Origin`` that is neither same-origin nor a ``--cors-origin``
is refused, so a web page cannot drive a token-free loopback server (CSRF).

Every refusal carries the wire's error body. Middlewares read ``settings`` on
each request, so a tunnel can add its host name to ``allowed_hosts`` once open.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
import secrets
import socket
import sys
from typing import TYPE_CHECKING, TextIO
from urllib.parse import parse_qsl

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from corteza.server.edge.limits import BodyLimitMiddleware, send_error
from corteza.wire import PROTOCOL_HEADER, ErrorType

if TYPE_CHECKING:
    from corteza.server.settings import Settings

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})
MIN_PUBLIC_TOKEN = 16  # characters of a chosen token on a server reachable beyond loopback
TOKEN_CHARS = re.compile(r"[\x21-\x7e]+")  # what an HTTP header carries unchanged

MISSING_TOKEN = (
    "Missing token: this server needs the header Authorization: Bearer <token> "
    "(the token is printed when the server starts)"
)
MALFORMED_HEADER = "Malformed Authorization header: expected Authorization: Bearer <token>"
EMPTY_TOKEN = "Empty token in the Authorization header: expected Authorization: Bearer <token>"
WRONG_TOKEN = "Wrong token: the Authorization header does not hold this server's token"
TUNNEL_NEEDS_TOKEN = "a tunnel needs a token; drop --no-auth (a token is generated) or pass --token"
UNSENDABLE_TOKEN = "the token must be printable ASCII without spaces"
TOKEN_IN_URL = (
    "Token in the URL refused (URLs end up in logs and browser history): "
    "send the header Authorization: Bearer <token> instead"
)


class SecurityConfigError(ValueError):
    """A start-up choice that would leave the server open; the message says what to do."""


def host_name(value: str) -> str:
    """A Host header or bind address without port and brackets: ``[::1]:8000`` -> ``::1``."""
    name = value.strip().lower()
    if name.startswith("["):
        end = name.find("]")
        return name[1:end] if end > 0 else name
    if name.count(":") == 1:  # name:port; a bare IPv6 address has several colons
        name = name.split(":", 1)[0]
    return name.removesuffix(".")


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def is_loopback(host: str) -> bool:
    """``127.0.0.0/8``, ``::1`` and ``localhost``, with or without a port."""
    name = host_name(host)
    address = _ip(name)
    return name == "localhost" or (address is not None and address.is_loopback)


def is_wildcard(host: str) -> bool:
    """A bind on every interface: ``0.0.0.0`` or ``::``."""
    return host_name(host) in WILDCARD_HOSTS


def exposure_problem(host: str, *, public: bool, token: str | None) -> str | None:
    """Why these settings would leave the server open, or None when they do not."""
    if token is not None and not token.strip():
        return "the token must not be empty"
    if token is not None and not TOKEN_CHARS.fullmatch(token):
        return UNSENDABLE_TOKEN
    if token is None and public:
        return TUNNEL_NEEDS_TOKEN
    if token is None and not is_loopback(host):
        return (
            f"a server bound to {host} is reachable from other machines and needs a token; "
            "pass --token or let one be generated"
        )
    return None


def resolve_token(host: str, *, tunnel: bool, token: str | None, no_auth: bool) -> str | None:
    """The token the server will require, or None for no auth (loopback only).

    Raises :class:`SecurityConfigError` for ``no_auth`` beyond loopback, a
    contradiction, or a short token on an exposed server.

    >>> resolve_token("127.0.0.1", tunnel=False, token=None, no_auth=False) is None
    True
    """
    exposed = tunnel or not is_loopback(host)
    if token is not None and no_auth:
        raise SecurityConfigError("--token and --no-auth contradict each other; pass one")
    if no_auth and tunnel:
        raise SecurityConfigError(TUNNEL_NEEDS_TOKEN)
    if no_auth and exposed:
        raise SecurityConfigError(
            f"--no-auth is allowed only on a loopback address; {host} is reachable from other "
            "machines: drop --no-auth (a token is generated) or bind 127.0.0.1"
        )
    if token is not None and not token.strip():
        raise SecurityConfigError("the token must not be empty; omit --token to get one")
    if token is not None and not TOKEN_CHARS.fullmatch(token):
        raise SecurityConfigError(UNSENDABLE_TOKEN)
    if token is not None and exposed and len(token) < MIN_PUBLIC_TOKEN:
        raise SecurityConfigError(
            f"a token on a server reachable from other machines needs at least "
            f"{MIN_PUBLIC_TOKEN} characters; omit --token and one is generated"
        )
    if token is None and exposed:
        return secrets.token_urlsafe(32)
    return token


def server_url(host: str, port: int) -> str:
    """The URL to print for a server bound to ``host``: its LAN address for a wildcard bind."""
    if is_wildcard(host):
        host = _lan_address()
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _lan_address() -> str:
    """This machine's address on its default route (no packet is sent), else loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))
            address: str = probe.getsockname()[0]
        except OSError:
            return "127.0.0.1"
    return address


def dashboard_url(url: str, token: str | None) -> str:
    """The dashboard's link; the token rides in the fragment, which browsers never send."""
    return f"{url}/#token={token}" if token else f"{url}/"


def banner_lines(url: str, token: str | None) -> list[str]:
    """What a user needs at start: the URL, with auth on the token and what to paste, and
    the dashboard's link."""
    lines = [f"corteza server: {url} (docs at {url}/docs)"]
    if token is None:
        lines.append("auth: off (no token; this server answers on this machine only)")
    else:
        lines.append(f"token: {token}")
        lines.append(f"on your machine: corteza connect {url} --token {token}")
    lines.append(f"dashboard: {dashboard_url(url, token)}")
    return lines


def print_banner(url: str, token: str | None, file: TextIO | None = None) -> None:
    """Print :func:`banner_lines`, one a line (to stdout by default)."""
    for line in banner_lines(url, token):
        print(line, file=file or sys.stdout, flush=True)


# ------------------------------------------------------------------ middlewares


def _header(scope: Scope, name: bytes) -> list[bytes]:
    return [value for key, value in scope["headers"] if key == name]


def host_allowed(name: str, settings: Settings) -> bool:
    """Whether a request for host ``name`` (no port) may be served under ``settings``."""
    if name in LOOPBACK_NAMES or is_loopback(name):
        return True
    if is_wildcard(settings.host):
        if _ip(name) is not None:
            return True
    elif name == host_name(settings.host):
        return True
    for pattern in settings.allowed_hosts:
        allowed = host_name(pattern)
        if allowed == "*" or allowed == name:
            return True
        if allowed.startswith("*.") and name.endswith(allowed[1:]):
            return True
    return False


def origin_allowed(origin: str, host: str, settings: Settings) -> bool:
    """Same-origin (the Origin's ``host:port`` is the Host header) or a listed CORS origin."""
    origin = origin.strip().lower().rstrip("/")
    listed = {o.strip().lower().rstrip("/") for o in settings.cors_origins}
    if "*" in listed or origin in listed:
        return True
    scheme, sep, netloc = origin.partition("://")
    return bool(sep) and scheme in ("http", "https") and netloc == host.strip().lower()


class HostOriginMiddleware:
    """Refuses a Host off the allow-list (400) and a foreign Origin (403)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        hosts = _header(scope, b"host")
        host = hosts[0].decode("latin-1") if len(hosts) == 1 else ""
        if not host_allowed(host_name(host), self.settings):
            shown = host_name(host)[:100] or "(none)"
            message = (
                f"Host {shown} is not served here (DNS rebinding guard); "
                f"start the server with --allowed-host {shown} to allow it"
            )
            await send_error(scope, send, 400, message, ErrorType.INVALID_HOST)
            return
        origins = _header(scope, b"origin")
        if origins:
            origin = origins[0].decode("latin-1")
            if len(origins) > 1 or not origin_allowed(origin, host, self.settings):
                shown = origin.strip()[:100]
                message = (
                    f"Origin {shown} may not call this server; start it with "
                    f"--cors-origin {shown} to allow that web page"
                )
                await send_error(scope, send, 403, message, ErrorType.FORBIDDEN_ORIGIN)
                return
        await self.app(scope, receive, send)


def is_exempt(method: str, path: str) -> bool:
    """``GET /health`` and the dashboard's shell, which hold no data, need no token."""
    if method not in ("GET", "HEAD"):
        return False
    if path in ("/health", "/"):
        return True
    return path.startswith("/static/") and ".." not in path.split("/")


def auth_problem(scope: Scope, token: bytes) -> str | None:
    """Why the request does not carry ``token`` properly, or None when it does."""
    query = scope.get("query_string", b"").decode("latin-1")
    if any("token" in key.lower() for key, _ in parse_qsl(query, keep_blank_values=True)):
        return TOKEN_IN_URL
    if scope["type"] == "http" and is_exempt(scope["method"], scope["path"]):
        return None
    headers = _header(scope, b"authorization")
    if not headers:
        return MISSING_TOKEN
    parts = headers[0].split(None, 1)
    if len(headers) > 1 or (parts and parts[0].lower() != b"bearer"):
        return MALFORMED_HEADER
    if len(parts) < 2 or not parts[1].strip():
        return EMPTY_TOKEN
    if not hmac.compare_digest(parts[1].strip(), token):
        return WRONG_TOKEN
    return None


class AuthMiddleware:
    """Requires ``Authorization: Bearer <token>`` on HTTP and WebSocket requests (401)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = self.settings.token
        if token is not None and scope["type"] in ("http", "websocket"):
            problem = auth_problem(scope, token.encode())
            if problem is not None:
                await send_error(
                    scope,
                    send,
                    401,
                    problem,
                    ErrorType.UNAUTHORIZED,
                    [(b"www-authenticate", b"Bearer")],
                )
                return
        await self.app(scope, receive, send)


def install_security(app: FastAPI, settings: Settings) -> None:
    """Add, inside the protocol header and outside the error middleware: Host and Origin
    checks, CORS (only when ``cors_origins`` is set), the token, body limits.

    Call it after ``UnexpectedErrorMiddleware`` is added and before the protocol
    header middleware (Starlette runs the last added first).
    """
    app.add_middleware(BodyLimitMiddleware, settings=settings)
    app.add_middleware(AuthMiddleware, settings=settings)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "HEAD", "POST", "PUT", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
            expose_headers=[PROTOCOL_HEADER],
        )
    app.add_middleware(HostOriginMiddleware, settings=settings)
