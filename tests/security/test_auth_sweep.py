"""Every route of the live server, asked without a valid token, in every wrong way.

The routes come from the server itself: its ``/openapi.json`` (so routes added later are
covered), the documentation pages, the dashboard's files as its page links them, a path
that does not exist, and the WebSocket stream. Path parameters get values that exist
(a trained run, a saved checkpoint's file, an open upload), so that only the token stands
between the request and a 2xx.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.conftest import TINY, LiveServer
from tests.helpers import samples
from tests.security.conftest import AUTH, TOKEN

EXEMPT = {"/health", "/"}  # and /static/...: GET needs no token there
EXTRA_PATHS = [
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
    "/openapi.json",
    "/v1/events",
    "/metrics",
    "/no/such/route",
]
STREAM = "/v1/train/stream"

MISSING = (
    "Missing token: this server needs the header Authorization: Bearer <token> "
    "(the token is printed when the server starts)"
)
WRONG = "Wrong token: the Authorization header does not hold this server's token"
EMPTY = "Empty token in the Authorization header: expected Authorization: Bearer <token>"
IN_URL = (
    "Token in the URL refused (URLs end up in logs and browser history): "
    "send the header Authorization: Bearer <token> instead"
)


@dataclass(frozen=True)
class Attempt:
    """One wrong way to present the token, and the refusal it must get."""

    name: str
    headers: dict[str, str]
    query: dict[str, str]
    message: str


ATTEMPTS = [
    Attempt("missing header", {}, {}, MISSING),
    Attempt("wrong token", {"Authorization": f"Bearer x{TOKEN[1:]}"}, {}, WRONG),
    Attempt("empty token", {"Authorization": "Bearer "}, {}, EMPTY),
    Attempt("case-changed token", {"Authorization": f"Bearer {TOKEN.swapcase()}"}, {}, WRONG),
    Attempt("token in the query string", {}, {"token": TOKEN}, IN_URL),
]


def send_raw(request: httpx.Request) -> httpx.Response:
    """Send ``request`` as it is over a fresh socket: httpx itself refuses a header value
    with a trailing space (``Bearer ``), which a hostile client may well send. Reads the
    head and a body of known length; an endless stream's body is not waited for."""
    host, port = request.url.host, request.url.port
    assert port is not None
    lines = [f"{request.method} {request.url.raw_path.decode()} HTTP/1.1", "Connection: close"]
    lines += [f"{name.decode()}: {value.decode()}" for name, value in request.headers.raw]
    with socket.create_connection((host, port), timeout=60) as sock:
        sock.sendall("\r\n".join(lines).encode() + b"\r\n\r\n" + request.read())
        data = b""
        while b"\r\n\r\n" not in data and (chunk := sock.recv(1 << 16)):
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status, *fields = head.decode("latin-1").split("\r\n")
        headers = httpx.Headers([(k, v) for k, _, v in (f.partition(": ") for f in fields)])
        length = int(headers.get("content-length", len(body)))
        while len(body) < length and (chunk := sock.recv(1 << 16)):
            body += chunk
    return httpx.Response(int(status.split()[1]), headers=headers, content=body)


def _exempt(method: str, path: str) -> bool:
    return method == "GET" and (path in EXEMPT or path.startswith("/static/"))


@pytest.fixture(scope="module")
def existing(secured_server: LiveServer, secured_http: httpx.Client) -> dict[str, str]:
    """Path parameter values that exist on the server, made with the token."""
    body = {"samples": samples(2, TINY.input_dim), "run_id": "sweep", "seq": 0}
    assert secured_http.post("/train_layer2", json=body).status_code == 200
    saved = secured_http.post("/v1/checkpoint")
    assert saved.status_code == 200
    upload_id = secured_http.post("/v1/checkpoint/uploads").json()["upload_id"]
    dataset = secured_server.state.datasets.add_arrays(
        np.zeros((2, TINY.input_dim), np.float32), np.zeros(2)
    )
    job = secured_http.post("/v1/jobs", json={"dataset": dataset.sha256, "holdout": 0})
    assert job.status_code == 201, job.text
    return {
        "job_id": job.json()["id"],
        "sha256": dataset.sha256,
        "run_id": "sweep",
        "name": "model.safetensors",
        "upload_id": upload_id,
        "checkpoint": saved.json()["checkpoint"],
    }


def _bodies() -> dict[str, dict[str, Any]]:
    """Bodies that the token alone would let through."""
    feedback = {"ajustes_aplicados": [0.1] * 16, "validacion": True, "timestamp": "t"}
    return {
        "/train_layer2": {"json": {"samples": samples(2, TINY.input_dim)}},
        "/feedback_dendritas": {"json": feedback},
        "/v1/predict": {"json": {"inputs": [[0.0] * TINY.input_dim]}},
        "/v1/jobs": {"json": {"dataset": "0" * 64, "holdout": 0}},
        "/v1/checkpoint/uploads/{upload_id}/{name}": {"content": b"chunk"},
    }


def _routes(http: httpx.Client, existing: dict[str, str]) -> list[tuple[str, str, str]]:
    """(method, path template, concrete path) of everything the server answers."""
    spec = http.get("/openapi.json").json()
    routes = [
        (method.upper(), template, template.format(**existing))
        for template, operations in spec["paths"].items()
        for method in operations
    ]
    page = http.get("/").text  # the dashboard shell, which links its own files
    statics = sorted({f"/{path}" for path in re.findall(r'(?:src|href)="/?(static/[^"]+)"', page)})
    for path in [*EXTRA_PATHS, "/", *statics]:
        if ("GET", path) not in {(m, p) for m, _, p in routes}:
            routes.append(("GET", path, path))
    return routes


def test_no_route_answers_without_the_token(
    secured_server: LiveServer,
    secured_http: httpx.Client,
    existing: dict[str, str],
    figure: Callable[[str], None],
) -> None:
    bodies = _bodies()
    routes = _routes(secured_http, existing)
    tally = {"requests": 0, "unauthenticated_2xx": 0}
    wrong: list[str] = []
    with secured_server.http() as http:
        for method, template, path in routes:
            for attempt in ATTEMPTS:
                request = http.build_request(
                    method,
                    path,
                    headers=attempt.headers,
                    params=attempt.query,
                    **bodies.get(template, {}),
                )
                response = send_raw(request)
                tally["requests"] += 1
                where = f"{method} {path} ({attempt.name}) -> {response.status_code}"
                if _exempt(method, path) and not attempt.query:
                    assert response.status_code == 200, where
                    continue
                if response.is_success:
                    tally["unauthenticated_2xx"] += 1
                refusal = {
                    "status": "error",
                    "error": attempt.message,
                    "error_type": "unauthorized",
                }
                if (
                    response.status_code != 401
                    or (method != "HEAD" and response.json() != refusal)  # HEAD: no body
                    or response.headers.get("www-authenticate") != "Bearer"
                ):
                    wrong.append(f"{where}: {response.text[:120]}")
    stream_refusals = _stream_refusals(secured_server)
    figure(
        f"auth-sweep: routes={len(routes) + 1} "
        f"requests={tally['requests'] + stream_refusals} "
        f"unauthenticated_2xx={tally['unauthenticated_2xx']}"
    )
    assert tally["unauthenticated_2xx"] == 0
    assert not wrong, "\n".join(wrong)
    assert {p for _, _, p in routes} >= {*EXTRA_PATHS, "/v1/runs/sweep"}


def _stream_refusals(live: LiveServer) -> int:
    """The stream refuses the handshake (HTTP 403: an ASGI close before accept carries no
    401), and lets the right token in."""
    url = live.url.replace("http://", "ws://") + STREAM
    for attempt in ATTEMPTS:
        query = "".join(f"?{k}={v}" for k, v in attempt.query.items())
        with pytest.raises(InvalidStatus) as refused:
            connect(url + query, additional_headers=attempt.headers, open_timeout=10).close()
        assert refused.value.response.status_code == 403, attempt.name
    with connect(url, additional_headers=AUTH, open_timeout=10) as ws:
        ws.send('{"type": "hello", "protocol": "1.0", "run_id": null}')
        assert '"welcome"' in str(ws.recv(timeout=10))
    return len(ATTEMPTS)
