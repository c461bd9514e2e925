"""Tunnels: the cloudflared URL read from its log, the process's life, the refusals.

The real cloudflared needs the internet, which the tests do not have: a stand-in
(tests/fakes/cloudflared) that prints the same log lines takes its place on PATH.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from corteza.client import free_port
from corteza.server.edge.security import MISSING_TOKEN
from corteza.server.launch.tunnel import (
    CLOUDFLARED_NOT_FOUND,
    NGROK_NO_TOKEN,
    NGROK_NOT_INSTALLED,
    CloudflaredTunnel,
    NgrokTunnel,
    TunnelError,
    find_quick_tunnel_url,
    make_tunnel,
)
from tests.fakes import FAKE_URL, put_fake_cloudflared_on_path

LOCAL = "http://127.0.0.1:9"  # nothing needs to listen: the stand-in does not proxy


@pytest.fixture
def record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The stand-in on PATH; the file where it writes its pid and arguments."""
    put_fake_cloudflared_on_path(tmp_path / "bin", monkeypatch)
    path = tmp_path / "cloudflared.json"
    monkeypatch.setenv("FAKE_CLOUDFLARED_RECORD", str(path))
    return path


@pytest.fixture
def tunnel() -> Iterator[CloudflaredTunnel]:
    opened = CloudflaredTunnel(url_timeout=10.0)
    try:
        yield opened
    finally:
        opened.stop()


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its reaper does not)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return False
    return fields[0] != "Z"


def wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.parametrize(
    ("line", "url"),
    [
        (
            "2024-08-01T10:00:01Z INF |  https://gentle-river-fake.trycloudflare.com   |",
            "https://gentle-river-fake.trycloudflare.com",
        ),
        ("INF https://a-b-c-9.trycloudflare.com", "https://a-b-c-9.trycloudflare.com"),
        ('ERR failed to request quick Tunnel: Post "https://api.trycloudflare.com/tunnel"', None),
        ("INF Requesting new quick Tunnel on trycloudflare.com...", None),
        ("INF Visit https://developers.cloudflare.com/ for more", None),
    ],
)
def test_the_quick_tunnel_url_is_read_from_a_log_line(line: str, url: str | None) -> None:
    assert find_quick_tunnel_url(line) == url


def test_cloudflared_opens_and_closes_with_its_process(
    record: Path, tunnel: CloudflaredTunnel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CORTEZA_TOKEN", "the-server-token")  # as `serve --nproc-per-node` sets
    assert tunnel.start(LOCAL) == FAKE_URL
    seen = json.loads(record.read_text())
    assert seen["argv"] == ["tunnel", "--url", LOCAL, "--no-autoupdate"]
    assert "CORTEZA_TOKEN" not in seen["env"] and "FAKE_CLOUDFLARED_RECORD" in seen["env"]
    assert tunnel.process is not None and tunnel.process.pid == seen["pid"]
    assert alive(seen["pid"])
    tunnel.stop()
    assert not alive(seen["pid"])
    tunnel.stop()  # twice is fine


def test_cloudflared_that_exits_early_is_one_line(
    record: Path, tunnel: CloudflaredTunnel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_CLOUDFLARED_MODE", "exit")
    with pytest.raises(TunnelError) as caught:
        tunnel.start(LOCAL)
    assert re.fullmatch(
        r"cloudflared exited with code 1 before giving a URL \(last line: \S+ ERR failed to "
        r'request quick Tunnel: Post "https://api.trycloudflare.com/tunnel": dial tcp: '
        r"lookup api.trycloudflare.com: no such host\)",
        str(caught.value),
    )


def test_cloudflared_without_a_url_times_out_and_is_stopped(
    record: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_CLOUDFLARED_MODE", "silent")
    tunnel = CloudflaredTunnel(url_timeout=1.0)
    with pytest.raises(TunnelError) as caught:
        tunnel.start(LOCAL)
    assert re.fullmatch(
        r"cloudflared gave no trycloudflare.com URL within 1 s; check that this machine reaches "
        r"the internet \(last line: \S+ INF Requesting new quick Tunnel on trycloudflare.com...\)",
        str(caught.value),
    )
    assert not alive(json.loads(record.read_text())["pid"])


def test_cloudflared_that_ignores_sigterm_is_killed_after_the_grace(
    record: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_CLOUDFLARED_MODE", "stubborn")
    tunnel = CloudflaredTunnel(url_timeout=10.0, grace=0.5)
    tunnel.start(LOCAL)
    process = tunnel.process
    assert process is not None
    tunnel.stop()
    assert process.returncode == -signal.SIGKILL  # SIGTERM was ignored; SIGKILL ended it
    assert not alive(json.loads(record.read_text())["pid"])


def test_cloudflared_log_is_drained_so_a_chatty_tunnel_never_stalls(
    record: Path, tunnel: CloudflaredTunnel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_CLOUDFLARED_MODE", "flood")
    tunnel.start(LOCAL)
    flooded = Path(f"{record}.flooded")
    deadline = time.monotonic() + 10
    while not flooded.exists():  # 1 MiB of log: 16 times a pipe's buffer
        assert time.monotonic() < deadline, "cloudflared blocked on a full stderr pipe"
        time.sleep(0.05)


def test_missing_cloudflared_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pycloudflared would download the binary (no internet here); it is hidden as if absent."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setitem(sys.modules, "pycloudflared", None)
    monkeypatch.setitem(sys.modules, "pycloudflared.util", None)
    with pytest.raises(TunnelError) as caught:
        CloudflaredTunnel().start(LOCAL)
    assert str(caught.value) == CLOUDFLARED_NOT_FOUND
    assert str(caught.value) == (
        "cloudflared not found: install it (https://developers.cloudflare.com/cloudflare-one/"
        'connections/connect-networks/downloads/) or `pip install "corteza[tunnel]"`'
    )


def test_ngrok_without_a_token_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NGROK_AUTHTOKEN", raising=False)
    with pytest.raises(TunnelError) as caught:
        NgrokTunnel().start(LOCAL)
    assert str(caught.value) == NGROK_NO_TOKEN
    assert str(caught.value) == (
        "ngrok needs an auth token: set NGROK_AUTHTOKEN "
        "(https://dashboard.ngrok.com/get-started/your-authtoken) or use --tunnel cloudflared"
    )


def test_ngrok_without_pyngrok_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NGROK_AUTHTOKEN", "unused")
    monkeypatch.setitem(sys.modules, "pyngrok", None)
    with pytest.raises(TunnelError) as caught:
        NgrokTunnel().start(LOCAL)
    assert str(caught.value) == NGROK_NOT_INSTALLED
    assert str(caught.value) == 'ngrok tunnels need pyngrok: `pip install "corteza[tunnel]"`'


def test_an_unknown_tunnel_is_refused() -> None:
    assert make_tunnel("none") is None
    with pytest.raises(
        ValueError, match=r"^unknown tunnel 'frp': choose one of none, cloudflared, ngrok$"
    ):
        make_tunnel("frp")


# ------------------------------------------------------------- corteza serve --tunnel


def serve_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "corteza", "serve", "--preset", "tiny", *args]


def test_serve_with_a_tunnel_prints_what_to_paste_and_its_tunnel_dies_with_it(
    record: Path, tmp_path: Path
) -> None:
    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(
        serve_command("--tunnel", "cloudflared", "--port", str(port)),
        stdout=subprocess.PIPE,
        stderr=log,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline().rstrip("\n") for _ in range(4)]
        token_line = re.fullmatch(r"token: (\S{32,})", lines[1])
        assert token_line is not None, lines
        token = token_line.group(1)
        assert lines == [
            f"corteza server: {FAKE_URL} (docs at {FAKE_URL}/docs)",
            f"token: {token}",
            f"on your machine: corteza connect {FAKE_URL} --token {token}",
            f"dashboard: {FAKE_URL}/#token={token}",
        ]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            assert http.get("/health").status_code == 200
            assert http.get("/status").json()["error"] == MISSING_TOKEN
            auth = {"Authorization": f"Bearer {token}"}
            assert http.get("/status", headers=auth).status_code == 200
        cloudflared = json.loads(record.read_text())["pid"]
        assert alive(cloudflared)
        process.kill()  # SIGKILL: no clean-up code of the server runs
        process.wait(timeout=10)
        assert wait_gone(cloudflared), "cloudflared outlived the killed server"
    finally:
        process.kill()
        process.wait()
        assert process.stdout is not None
        process.stdout.close()
        log.close()


def test_serve_stops_its_tunnel_on_sigterm(record: Path, tmp_path: Path) -> None:
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            serve_command("--tunnel", "cloudflared", "--port", str(free_port())),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + 60
        while "dashboard: " not in log_path.read_text():
            assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        cloudflared = json.loads(record.read_text())["pid"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == -signal.SIGTERM
    finally:
        process.kill()
        process.wait()
    text = log_path.read_text()
    assert text.index("server stopped after 0 batches") < text.index("cloudflared stopped")
    assert not alive(cloudflared)


def test_serve_refuses_a_tunnel_without_auth() -> None:
    result = subprocess.run(
        serve_command("--tunnel", "cloudflared", "--no-auth"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr == (
        "error: a tunnel needs a token; drop --no-auth (a token is generated) or pass --token\n"
    )
    assert result.stdout == ""


def test_serve_without_cloudflared_says_what_to_install_before_building_the_model(
    tmp_path: Path,
) -> None:
    """pycloudflared, when installed, would download cloudflared (no internet here): a package
    of that name that fails to import stands in for its absence."""
    blocker = tmp_path / "hide" / "pycloudflared"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text('raise ImportError("hidden by the test")\n')
    env = {**os.environ, "PATH": str(tmp_path), "PYTHONPATH": str(blocker.parent)}
    result = subprocess.run(
        serve_command("--tunnel", "cloudflared", "--port", str(free_port())),
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 1
    assert result.stderr.endswith(f"\nerror: {CLOUDFLARED_NOT_FOUND}\n")
    assert "model ready" not in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
