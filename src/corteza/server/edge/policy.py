"""The security policy as plain functions: host names, loopback, exposure, the token.

Token policy (:func:`resolve_token`): a server bound to loopback runs without a
token unless one is given, so the seed's token-free TypeScript client keeps
working on one machine; a server reachable beyond loopback (another bind
address, or a tunnel) always has one, generated when none is given.

Nothing here knows HTTP or ``Settings``: ``Settings`` validates with
:func:`exposure_problem`, the middlewares in :mod:`corteza.server.edge.security`
use :func:`host_name` and :func:`is_loopback`, and whoever starts a server
(``corteza serve``, ``serve_in_background``) resolves the token and prints
:func:`banner_lines`.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import socket

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})
MIN_PUBLIC_TOKEN = 16  # characters of a chosen token on a server reachable beyond loopback
TOKEN_CHARS = re.compile(r"[\x21-\x7e]+")  # what an HTTP header carries unchanged

TUNNEL_NEEDS_TOKEN = "a tunnel needs a token; drop --no-auth (a token is generated) or pass --token"
UNSENDABLE_TOKEN = "the token must be printable ASCII without spaces"


class SecurityConfigError(ValueError):
    """A start-up choice that would leave the server open; the message says what to do."""


def host_name(value: str) -> str:
    """A Host header or bind address without port and brackets: ``[::1]:8000`` -> ``::1``."""
    name = value.strip().lower()
    if name.startswith("["):
        end = name.find("]")
        rest = name[end + 1 :] if end > 0 else ""
        if end > 0 and (not rest or (rest[0] == ":" and rest[1:].isascii() and rest[1:].isdigit())):
            return name[1:end]
        return name  # garbage after the bracket ("[::1]evil.com"): no address of ours
    if name.count(":") == 1:  # name:port; a bare IPv6 address has several colons
        name = name.split(":", 1)[0]
    return name.removesuffix(".")


def ip_address(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``name`` as an IP address, or None when it is a host name."""
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def is_loopback(host: str) -> bool:
    """``127.0.0.0/8``, ``::1`` and ``localhost``, with or without a port."""
    name = host_name(host)
    address = ip_address(name)
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


def connect_command(url: str, token: str | None) -> str:
    """What to paste into a terminal on the PC: ``corteza connect URL [--token T]``."""
    return f"corteza connect {url} --token {token}" if token else f"corteza connect {url}"


def banner_lines(url: str, token: str | None) -> list[str]:
    """What a user needs at start: the URL, with auth on the token and what to paste, and
    the dashboard's link. The caller prints them.

    >>> banner_lines("http://127.0.0.1:8000", None)[1]
    'auth: off (no token; this server answers on this machine only)'
    """
    lines = [f"corteza server: {url} (docs at {url}/docs)"]
    if token is None:
        lines.append("auth: off (no token; this server answers on this machine only)")
    else:
        lines.append(f"token: {token}")
        lines.append(f"on your machine: {connect_command(url, token)}")
    lines.append(f"dashboard: {dashboard_url(url, token)}")
    return lines
