"""Who may talk to the server: the bearer token, the Host allow-list, the Origin check.

Who needs a token is decided at start-up by the policy in
:mod:`corteza.server.edge.policy`; this module enforces it on each request.

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
Requests a page makes without an ``Origin`` (an ``<img>``, a link, a no-cors
fetch) carry the browser's ``Sec-Fetch-Site``: anything but ``same-origin``
or ``none`` (the user's own navigation) is refused on every route but
``/health`` and the dashboard's shell, unless its ``Origin`` is a listed
``--cors-origin``. Clients that are not browsers (Python, the seed's Node
client, curl) send no ``Sec-Fetch-Site`` and are not affected.

Every refusal carries the wire's error body. Middlewares read ``settings`` on
each request, so a tunnel can add its host name to ``allowed_hosts`` once open.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from corteza.server.edge.errors import send_error
from corteza.server.edge.limits import BodyLimitMiddleware
from corteza.server.edge.policy import (
    LOOPBACK_NAMES,
    host_name,
    ip_address,
    is_loopback,
    is_wildcard,
    normal_origin,
)
from corteza.wire import PROTOCOL_HEADER, ErrorType

if TYPE_CHECKING:
    from corteza.server.settings import Settings

MISSING_TOKEN = (
    "Missing token: this server needs the header Authorization: Bearer <token> "
    "(the token is printed when the server starts)"
)
MALFORMED_HEADER = "Malformed Authorization header: expected Authorization: Bearer <token>"
EMPTY_TOKEN = "Empty token in the Authorization header: expected Authorization: Bearer <token>"
WRONG_TOKEN = "Wrong token: the Authorization header does not hold this server's token"
TOKEN_IN_URL = (
    "Token in the URL refused (URLs end up in logs and browser history): "
    "send the header Authorization: Bearer <token> instead"
)


# ------------------------------------------------------------------ middlewares


def _header(scope: Scope, name: bytes) -> list[bytes]:
    return [value for key, value in scope["headers"] if key == name]


def host_allowed(name: str, settings: Settings) -> bool:
    """Whether a request for host ``name`` (no port) may be served under ``settings``."""
    if name in LOOPBACK_NAMES or is_loopback(name):
        return True
    if is_wildcard(settings.host):
        if ip_address(name) is not None:
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


def origin_allowed(origin: str, host: str, settings: Settings, scheme: str = "http") -> bool:
    """Same-origin (the Origin's scheme is the request's and its ``host:port`` the Host
    header) or a listed CORS origin. A server behind a tunnel (``public``) is reached over
    https whatever its own scheme: https pages of its host are same-origin too."""
    origin = normal_origin(origin)
    listed = {normal_origin(o) for o in settings.cors_origins}
    if "*" in listed or origin in listed:
        return True
    own = {"ws": "http", "wss": "https"}.get(scheme, scheme)
    schemes = {own, "https"} if settings.public else {own}
    origin_scheme, sep, netloc = origin.partition("://")
    return bool(sep) and origin_scheme in schemes and netloc == host.strip().lower()


CROSS_SITE_ALLOWED = frozenset({b"same-origin", b"none"})  # Sec-Fetch-Site values let through


def cross_site_problem(scope: Scope, settings: Settings) -> str | None:
    """Why a browser's request from another site is refused, or None (see the module doc)."""
    sites = _header(scope, b"sec-fetch-site")
    if not sites or sites[0].strip().lower() in CROSS_SITE_ALLOWED:
        return None
    if scope["type"] == "http" and is_exempt(scope["method"], scope["path"]):
        return None
    listed = {normal_origin(o) for o in settings.cors_origins}
    origins = _header(scope, b"origin")
    if origins and ("*" in listed or origins[0].decode("latin-1").strip().lower() in listed):
        return None
    site = sites[0].decode("latin-1").strip()[:40]
    return (
        f"Cross-site request refused (Sec-Fetch-Site: {site}): a web page of another site "
        "may not call this server; start it with --cors-origin ORIGIN to allow that page"
    )


class HostOriginMiddleware:
    """Refuses a Host off the allow-list (400), a foreign Origin and a cross-site browser
    request (403)."""

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
            scheme = str(scope.get("scheme", "http"))
            if len(origins) > 1 or not origin_allowed(origin, host, self.settings, scheme):
                shown = origin.strip()[:100]
                message = (
                    f"Origin {shown} may not call this server; start it with "
                    f"--cors-origin {shown} to allow that web page"
                )
                await send_error(scope, send, 403, message, ErrorType.FORBIDDEN_ORIGIN)
                return
        problem = cross_site_problem(scope, self.settings)
        if problem is not None:
            await send_error(scope, send, 403, problem, ErrorType.FORBIDDEN_ORIGIN)
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
            allow_origins=[normal_origin(origin) for origin in settings.cors_origins],
            allow_methods=["GET", "HEAD", "POST", "PUT", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
            expose_headers=[PROTOCOL_HEADER],
        )
    app.add_middleware(HostOriginMiddleware, settings=settings)
