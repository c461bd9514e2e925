"""``serve_in_background``: a real uvicorn in a daemon thread, for Jupyter and Colab.

Tunnelled cases use the stand-in cloudflared (tests/fakes), since there is no internet here.
"""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import httpx
import pytest

from corteza.server import ServerStartError, TunnelError, serve_in_background
from corteza.server.checkpoints.store import list_checkpoints
from corteza.server.edge.security import MISSING_TOKEN
from corteza.server.launch.tunnel import NGROK_NO_TOKEN
from tests.fakes import FAKE_URL, put_fake_cloudflared_on_path
from tests.helpers import samples
from tests.server.launch.test_tunnel import alive

TINY_DIM = 32  # the tiny preset's input width


def server_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("corteza-server")]


def test_stop_ends_an_open_event_stream_at_once() -> None:
    """A dashboard left open in the browser must not hold stop() for the 30 s grace: a
    server in a notebook's thread gets no signal to end its event streams."""
    server = serve_in_background(preset="tiny")
    failures: list[Exception] = []
    opened = threading.Event()

    def follow() -> None:
        try:
            with httpx.stream("GET", f"{server.url}/v1/events", timeout=60) as response:
                opened.set()
                for _ in response.iter_lines():  # ends when the server ends the stream
                    pass
        except httpx.HTTPError as exc:
            failures.append(exc)

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    try:
        assert opened.wait(30)
    finally:
        server.stop()
    reader.join(timeout=10)
    assert not reader.is_alive()  # stop() ended the open stream instead of waiting on it
    assert failures == []  # the stream was ended, not dropped


def test_the_call_returns_while_the_server_runs_and_stop_saves_a_checkpoint(
    tmp_path: Path,
) -> None:
    server = serve_in_background(preset="tiny", checkpoint_dir=tmp_path / "ckpt", lr=1e-3)
    try:
        assert server.running
        assert server.url == server.local_url
        assert server.local_url.startswith("http://127.0.0.1:")
        assert server.token is None  # loopback only: no token unless given
        assert server.connect_command == f"corteza connect {server.url}"
        assert server.dashboard_url == f"{server.url}/"
        assert repr(server) == (
            f"<corteza server at {server.url}; on your PC: corteza connect {server.url}>"
        )
        with httpx.Client(base_url=server.url, timeout=30) as http:
            assert http.get("/health").status_code == 200
            body = {"samples": samples(2, TINY_DIM), "run_id": "nb", "seq": 0}
            assert http.post("/train_layer2", json=body).status_code == 200
    finally:
        server.stop()
    assert not server.running
    assert server_threads() == []
    assert repr(server) == f"<corteza server at {server.url}, stopped>"
    (checkpoint,) = list_checkpoints(tmp_path / "ckpt")
    state = json.loads((checkpoint / "state.json").read_text())["state"]
    assert state["runs"][0]["next_seq"] == 1
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.local_url}/health", timeout=5)
    server.stop()  # twice is fine


def test_a_tunnel_gives_a_public_url_a_token_and_the_line_to_paste(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    put_fake_cloudflared_on_path(tmp_path / "bin", monkeypatch)
    record = tmp_path / "cloudflared.json"
    monkeypatch.setenv("FAKE_CLOUDFLARED_RECORD", str(record))
    with serve_in_background(preset="tiny", tunnel="cloudflared") as server:
        token = server.token
        assert token is not None and len(token) >= 32
        assert server.url == FAKE_URL
        assert server.connect_command == f"corteza connect {FAKE_URL} --token {token}"
        assert server.dashboard_url == f"{FAKE_URL}/#token={token}"
        assert server.settings.public
        assert server.settings.allowed_hosts == ["gentle-river-fake.trycloudflare.com"]
        cloudflared = json.loads(record.read_text())
        assert cloudflared["argv"] == ["tunnel", "--url", server.local_url, "--no-autoupdate"]
        html = server._repr_html_()
        assert f"<code>corteza connect {FAKE_URL} --token {token}</code>" in html
        assert f"<a href='{FAKE_URL}/#token={token}' target='_blank'>" in html
        with httpx.Client(base_url=server.local_url, timeout=30) as http:
            assert http.get("/health").status_code == 200
            refused = http.get("/status")
            assert refused.status_code == 401
            assert refused.json() == {
                "status": "error",
                "error": MISSING_TOKEN,
                "error_type": "unauthorized",
            }
            auth = {"Authorization": f"Bearer {token}"}
            # What cloudflared forwards: the public host name, now on the allow-list.
            tunnel_host = {**auth, "Host": "gentle-river-fake.trycloudflare.com"}
            assert http.get("/status", headers=tunnel_host).status_code == 200
            assert http.get("/status", headers={**auth, "Host": "evil.example"}).status_code == 400
    assert not server.running
    assert not alive(cloudflared["pid"])


def test_a_tunnel_that_cannot_open_stops_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    put_fake_cloudflared_on_path(tmp_path / "bin", monkeypatch)
    monkeypatch.setenv("FAKE_CLOUDFLARED_MODE", "exit")
    port = _free_port()
    with pytest.raises(TunnelError, match=r"^cloudflared exited with code 1 before giving a URL"):
        serve_in_background(preset="tiny", tunnel="cloudflared", port=port)
    assert server_threads() == []
    with socket.create_server(("127.0.0.1", port)):
        pass  # the port is free again


def test_a_taken_port_is_one_clear_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(ServerStartError) as caught:
            serve_in_background(preset="tiny", port=port)
    assert str(caught.value) == f"cannot listen on 127.0.0.1:{port}: Address already in use"


def test_a_server_that_fails_to_start_says_why(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with pytest.raises(ServerStartError) as caught:
        serve_in_background(preset="tiny", checkpoint_dir=blocker)
    assert str(caught.value) == (
        f"the server did not start: FileExistsError: [Errno 17] File exists: '{blocker}'"
    )
    assert server_threads() == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"preset": "huge"}, "unknown preset 'huge': choose one of default, tiny"),
        ({"tunnel": "frp"}, "unknown tunnel 'frp': choose one of none, cloudflared, ngrok"),
        (
            {"host": "0.0.0.0", "token": "short"},
            "a token on a server reachable from other "
            "machines needs at least 16 characters; omit --token and one is generated",
        ),
    ],
)
def test_impossible_arguments_are_refused_before_anything_starts(
    kwargs: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError) as caught:
        serve_in_background(**kwargs)
    assert str(caught.value) == message
    assert server_threads() == []


def _free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port: int = probe.getsockname()[1]
        return port


def test_a_tunnel_missing_its_prerequisite_fails_before_the_model_is_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NGROK_AUTHTOKEN", raising=False)
    with pytest.raises(TunnelError) as caught:
        serve_in_background(preset="tiny", tunnel="ngrok")
    assert str(caught.value) == NGROK_NO_TOKEN
    assert server_threads() == []


def test_any_web_page_allowed_gets_a_token() -> None:
    with serve_in_background(preset="tiny", cors_origins=["*"]) as server:
        assert server.token is not None
        assert httpx.get(f"{server.url}/status", timeout=30).status_code == 401
