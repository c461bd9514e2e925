"""The bearer token: who needs it, the refusals' exact words, and the start-up policy."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from corteza.cli.app import app as cli
from corteza.client import Client, StreamingTrainer, free_port
from corteza.client.errors import UnauthorizedError
from corteza.server import Settings
from corteza.server.edge.policy import SecurityConfigError, banner_lines, is_loopback, resolve_token
from corteza.server.edge.security import (
    EMPTY_TOKEN,
    MALFORMED_HEADER,
    MISSING_TOKEN,
    TOKEN_IN_URL,
    WRONG_TOKEN,
    is_exempt,
)
from tests.conftest import TINY, LiveServer, start_server, stop_server
from tests.helpers import assert_same_model, samples, snapshot_model, wait_healthy

TOKEN = f"Tk{secrets.token_urlsafe(32)}Tk"  # letters at both ends: swapcase() differs
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def secured() -> Iterator[LiveServer]:
    live = start_server(Settings(model=TINY, seed=0, lr=1e-3, token=TOKEN))
    try:
        yield live
    finally:
        stop_server(live)


def _error(response: httpx.Response) -> str:
    body = response.json()
    assert body["status"] == "error"
    assert body["error_type"] == "unauthorized"
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["x-corteza-protocol"] == "1.0"
    return str(body["error"])


def test_loopback_without_token_serves_the_seed_routes_without_a_header(
    http: httpx.Client,
) -> None:
    """The seed's TypeScript client sends no token; on loopback it keeps working."""
    assert http.post("/train_layer2", json={"samples": samples(2, 32)}).status_code == 200
    feedback = {"ajustes_aplicados": [0.0] * 16, "validacion": False, "timestamp": "t"}
    assert http.post("/feedback_dendritas", json=feedback).status_code == 200
    assert http.post("/diagnostico").status_code == 200
    for path in ("/status", "/health", "/info", "/metricas", "/openapi.json"):
        assert http.get(path).status_code == 200, path


@pytest.mark.parametrize(
    ("headers", "query", "message"),
    [
        ({}, "", MISSING_TOKEN),
        ({"Authorization": "Bearer not-the-token"}, "", WRONG_TOKEN),
        ({"Authorization": f"Bearer {TOKEN.swapcase()}"}, "", WRONG_TOKEN),
        ({"Authorization": f"Bearer {TOKEN}x"}, "", WRONG_TOKEN),
        ({"Authorization": "Bearer"}, "", EMPTY_TOKEN),
        ({"Authorization": ""}, "", EMPTY_TOKEN),
        ({"Authorization": f"Basic {TOKEN}"}, "", MALFORMED_HEADER),
        ({"Authorization": TOKEN}, "", MALFORMED_HEADER),
        (AUTH, f"?token={TOKEN}", TOKEN_IN_URL),
        (AUTH, f"?access_token={TOKEN}", TOKEN_IN_URL),
        ({}, f"?x=1&API_Token={TOKEN}", TOKEN_IN_URL),
    ],
)
def test_refusals_say_what_is_wrong(
    secured: LiveServer, headers: dict[str, str], query: str, message: str
) -> None:
    with secured.http() as http:
        response = http.get(f"/status{query}", headers=headers)
    assert response.status_code == 401
    assert _error(response) == message


def test_the_messages_are_distinct() -> None:
    messages = {MISSING_TOKEN, WRONG_TOKEN, EMPTY_TOKEN, MALFORMED_HEADER, TOKEN_IN_URL}
    assert len(messages) == 5
    assert MISSING_TOKEN == (
        "Missing token: this server needs the header Authorization: Bearer <token> "
        "(the token is printed when the server starts)"
    )
    assert WRONG_TOKEN == "Wrong token: the Authorization header does not hold this server's token"


def test_the_scheme_is_case_insensitive_the_token_is_not(secured: LiveServer) -> None:
    with secured.http() as http:
        assert http.get("/status", headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200
        assert http.get("/status", headers={"Authorization": f"BEARER  {TOKEN}"}).status_code == 200
        assert http.get("/status", headers=AUTH).status_code == 200


def test_only_get_and_head_of_health_are_exempt(secured: LiveServer) -> None:
    """POST /health is not the exempt GET /health. Every other route, absent ones included:
    tests/security/test_auth_sweep.py."""
    with secured.http() as http:
        response = http.post("/health")
    assert response.status_code == 401
    assert _error(response) == MISSING_TOKEN


def test_health_and_the_dashboard_shell_need_no_token(secured: LiveServer) -> None:
    with secured.http() as http:
        assert http.get("/health").json()["alive"] is True
        assert http.head("/health").status_code != 401  # past auth (FastAPI has no HEAD)
        page = http.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert 'src="static/dashboard.js"' in page.text
        assert http.get("/static/dashboard.js").status_code == 200
        missing = http.get("/static/no-such-file.js")  # past auth: not 401 but 404
        assert missing.status_code == 404
        assert missing.json()["error_type"] == "not_found"


@pytest.mark.parametrize(
    ("method", "path", "exempt"),
    [
        ("GET", "/health", True),
        ("HEAD", "/health", True),
        ("GET", "/", True),
        ("GET", "/static/app.js", True),
        ("POST", "/health", False),
        ("POST", "/", False),
        ("GET", "/static/../v1/checkpoint", False),
        ("GET", "/staticx", False),
        ("GET", "/health/", False),
    ],
)
def test_exemptions(method: str, path: str, exempt: bool) -> None:
    assert is_exempt(method, path) is exempt


def test_a_refused_batch_leaves_the_model_untouched(secured: LiveServer) -> None:
    before = snapshot_model(secured.state)
    with secured.http() as http:
        response = http.post("/train_layer2", json={"samples": samples(4, 32)})
        assert response.status_code == 401
        bad = {"Authorization": "Bearer nope"}
        feedback = {"ajustes_aplicados": [0.5] * 16, "validacion": True, "timestamp": "t"}
        assert http.post("/feedback_dendritas", json=feedback, headers=bad).status_code == 401
    assert_same_model(before, snapshot_model(secured.state))


def _ws_url(live: LiveServer) -> str:
    return live.url.replace("http://", "ws://") + "/v1/train/stream"


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {TOKEN[:-1]}"}]
)
def test_the_stream_refuses_the_handshake_without_the_token(
    secured: LiveServer, headers: dict[str, str]
) -> None:
    with pytest.raises(InvalidStatus) as caught:
        connect(_ws_url(secured), additional_headers=headers, open_timeout=10).close()
    assert caught.value.response.status_code == 403  # a close before accept


def test_the_stream_accepts_the_token(secured: LiveServer) -> None:
    with connect(_ws_url(secured), additional_headers=AUTH, open_timeout=10) as ws:
        ws.send(json.dumps({"type": "hello", "protocol": "1.0", "run_id": None}))
        assert json.loads(ws.recv(timeout=10))["type"] == "welcome"


def test_the_client_raises_unauthorized_with_the_servers_words(secured: LiveServer) -> None:
    with Client(secured.url, retries=0) as client, pytest.raises(UnauthorizedError) as caught:
        client.status()
    assert caught.value.status == 401
    assert caught.value.message == MISSING_TOKEN
    assert str(caught.value) == (
        f"{MISSING_TOKEN} (pass --token TOKEN or run `corteza connect URL --token TOKEN`)"
    )
    with Client(secured.url, token=TOKEN, retries=0) as client:
        assert client.status().status == "online"


def test_a_streaming_trainer_without_the_token_stops_with_unauthorized(
    secured: LiveServer,
) -> None:
    """The refused handshake sends it to one request per batch, which says why."""
    X = np.zeros((4, 32), dtype=np.float32)
    y = np.zeros(4, dtype=np.float32)
    with Client(secured.url, token="wrong-token", retries=0) as client:
        trainer = StreamingTrainer(client, X, y, batch_size=2, give_up_after=5)
        with pytest.raises(UnauthorizedError) as caught:
            trainer.run()
    assert caught.value.message == WRONG_TOKEN


def test_the_cli_says_it_in_one_line(secured: LiveServer) -> None:
    result = CliRunner().invoke(cli, ["status", "--server", secured.url])
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: {MISSING_TOKEN} (pass --token TOKEN or run `corteza connect URL --token TOKEN`)\n"
    )


# ------------------------------------------------------------------ start-up policy


@pytest.mark.parametrize(
    ("host", "tunnel", "token", "expected"),
    [
        ("127.0.0.1", False, None, None),
        ("localhost", False, None, None),
        ("::1", False, None, None),
        ("127.0.0.5", False, None, None),
        ("127.0.0.1", False, "a-token", "a-token"),
        ("0.0.0.0", False, "0123456789abcdef", "0123456789abcdef"),
        ("127.0.0.1", True, "0123456789abcdef", "0123456789abcdef"),
    ],
)
def test_resolve_token_keeps_or_omits(
    host: str, tunnel: bool, token: str | None, expected: str | None
) -> None:
    assert resolve_token(host, tunnel=tunnel, token=token, no_auth=False) == expected


@pytest.mark.parametrize(
    ("host", "tunnel"),
    [("0.0.0.0", False), ("::", False), ("192.168.1.5", False), ("127.0.0.1", True)],
)
def test_resolve_token_generates_one_beyond_loopback(host: str, tunnel: bool) -> None:
    token = resolve_token(host, tunnel=tunnel, token=None, no_auth=False)
    assert token is not None
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token)
    assert token != resolve_token(host, tunnel=tunnel, token=None, no_auth=False)


def test_no_auth_on_loopback_is_allowed() -> None:
    assert resolve_token("127.0.0.1", tunnel=False, token=None, no_auth=True) is None


@pytest.mark.parametrize(
    ("host", "tunnel", "token", "no_auth", "message"),
    [
        (
            "0.0.0.0",
            False,
            None,
            True,
            "--no-auth is allowed only on a loopback address; 0.0.0.0 is reachable from other "
            "machines: drop --no-auth (a token is generated) or bind 127.0.0.1",
        ),
        (
            "10.0.0.2",
            False,
            None,
            True,
            "--no-auth is allowed only on a loopback address; 10.0.0.2 is reachable from other "
            "machines: drop --no-auth (a token is generated) or bind 127.0.0.1",
        ),
        (
            "127.0.0.1",
            True,
            None,
            True,
            "a tunnel needs a token; drop --no-auth (a token is generated) or pass --token",
        ),
        (
            "127.0.0.1",
            False,
            "x" * 20,
            True,
            "--token and --no-auth contradict each other; pass one",
        ),
        ("127.0.0.1", False, " ", False, "the token must not be empty; omit --token to get one"),
        (
            "127.0.0.1",
            False,
            "héllo wörld",
            False,
            "the token must be printable ASCII without spaces",
        ),
        (
            "0.0.0.0",
            False,
            "short",
            False,
            "a token on a server reachable from other machines needs at least 16 characters; "
            "omit --token and one is generated",
        ),
    ],
)
def test_resolve_token_refuses_open_servers(
    host: str, tunnel: bool, token: str | None, no_auth: bool, message: str
) -> None:
    with pytest.raises(SecurityConfigError) as caught:
        resolve_token(host, tunnel=tunnel, token=token, no_auth=no_auth)
    assert str(caught.value) == message
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]:8000", True),
        ("localhost", True),
        ("LOCALHOST:80", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.1", False),
        ("example.com", False),
        ("localhost.example.com", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"host": "0.0.0.0"},
            "a server bound to 0.0.0.0 is reachable from other machines and "
            "needs a token; pass --token or let one be generated",
        ),
        (
            {"public": True},
            "a tunnel needs a token; drop --no-auth (a token is generated) or pass --token",
        ),
        ({"token": ""}, "the token must not be empty"),
        ({"token": "two words"}, "the token must be printable ASCII without spaces"),
    ],
)
def test_settings_refuse_an_open_server(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Settings(model=TINY, **fields)  # type: ignore[arg-type]


def test_the_token_stays_out_of_the_settings_repr() -> None:
    assert TOKEN not in repr(Settings(model=TINY, token=TOKEN))


def test_banner() -> None:
    assert banner_lines("http://127.0.0.1:8000", None) == [
        "corteza server: http://127.0.0.1:8000 (docs at http://127.0.0.1:8000/docs)",
        "auth: off (no token; this server answers on this machine only)",
        "dashboard: http://127.0.0.1:8000/",
    ]
    assert banner_lines("https://a.example", "T0K") == [
        "corteza server: https://a.example (docs at https://a.example/docs)",
        "token: T0K",
        "on your machine: corteza connect https://a.example --token T0K",
        "dashboard: https://a.example/#token=T0K",
    ]


# ------------------------------------------------------------------ corteza serve


def test_serve_refuses_no_auth_beyond_loopback() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "corteza", "serve", "--host", "0.0.0.0", "--no-auth"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr == (
        "error: --no-auth is allowed only on a loopback address; 0.0.0.0 is reachable from "
        "other machines: drop --no-auth (a token is generated) or bind 127.0.0.1\n"
    )


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["--no-auth", "--token", "x" * 20],
            "error: --token and --no-auth contradict each other; pass one\n",
        ),
        (
            ["--host", "0.0.0.0", "--token", "short"],
            "error: a token on a server reachable from other machines needs at least 16 "
            "characters; omit --token and one is generated\n",
        ),
    ],
)
def test_serve_refusals_are_one_line(args: list[str], line: str) -> None:
    result = CliRunner().invoke(cli, ["serve", *args])
    assert result.exit_code == 2
    assert result.stderr == line


def test_serve_reads_the_token_from_corteza_token() -> None:
    result = CliRunner().invoke(cli, ["serve", "--no-auth"], env={"CORTEZA_TOKEN": "x" * 20})
    assert result.exit_code == 2
    assert result.stderr == "error: --token and --no-auth contradict each other; pass one\n"


def _banner(process: subprocess.Popen[str]) -> list[str]:
    assert process.stdout is not None
    lines: list[str] = []
    while len(lines) < 4:
        line = process.stdout.readline()
        assert line, "the server exited before its banner"
        lines.append(line.rstrip("\n"))
    return lines


def test_serve_generates_and_prints_a_token_beyond_loopback() -> None:
    """A real ``corteza serve --host 0.0.0.0``: the banner's token is the one it requires."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "corteza",
        "serve",
        "--preset",
        "tiny",
        "--host",
        "0.0.0.0",
        "--port",
        str(port),
        "--max-connections",
        "2",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    ) as process:
        try:
            first, token_line, connect_line, dashboard_line = _banner(process)
            token = token_line.removeprefix("token: ")
            assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token)
            url = re.fullmatch(r"corteza server: (http://\S+) \(docs at \S+/docs\)", first)
            assert url is not None and url.group(1).endswith(f":{port}")
            assert connect_line == (
                f"on your machine: corteza connect {url.group(1)} --token {token}"
            )
            assert dashboard_line == f"dashboard: {url.group(1)}/#token={token}"
            local = f"http://127.0.0.1:{port}"
            wait_healthy(local)
            assert httpx.get(f"{local}/status", timeout=30).status_code == 401
            auth = {"Authorization": f"Bearer {token}"}
            assert httpx.get(f"{local}/status", headers=auth, timeout=30).status_code == 200
            # --max-connections 2: an idle socket counts for nothing; two streams fill the cap,
            # and /health still answers.
            with (
                socket.create_connection(("127.0.0.1", port)),
                httpx.Client(base_url=local, headers=auth, timeout=30) as http,
                http.stream("GET", "/v1/events") as first_stream,
                http.stream("GET", "/v1/events") as second_stream,
            ):
                assert (first_stream.status_code, second_stream.status_code) == (200, 200)
                assert http.get("/status").status_code == 503
                assert http.get("/health").status_code == 200
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)


def test_any_web_page_allowed_needs_a_token() -> None:
    problem = (
        "--cors-origin '*' (or 'null') lets every web page call this server and needs a token: "
        "pass --token (or let one be generated by binding beyond loopback), or list the pages "
        "allowed"
    )
    for any_page in (["*"], ["*/"], [" NULL "], ["https://app.example", "null"]):
        with pytest.raises(ValueError, match=re.escape(problem)):
            Settings(model=TINY, cors_origins=any_page)
    assert Settings(model=TINY, cors_origins=["*"], token="t" * 16).cors_origins == ["*"]
    assert Settings(model=TINY, cors_origins=["https://app.example"]).token is None
    generated = resolve_token("127.0.0.1", tunnel=False, token=None, no_auth=False, any_page=True)
    assert generated is not None and len(generated) >= 32
    result = CliRunner().invoke(cli, ["serve", "--cors-origin", "*", "--no-auth"])
    assert result.exit_code == 2
    assert result.stderr == (
        "error: --cors-origin '*' (or 'null') lets every web page call this server: drop "
        "--no-auth (a token is generated) or list the pages allowed\n"
    )
