"""The embedded local server goes when the process that started it is killed outright."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest

STARTER = """
import sys, time
from corteza.client import LocalServer
server = LocalServer(["--preset", "tiny"]).start()
print(server.url, server._process.pid, flush=True)
time.sleep(600)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_a_sigkilled_parent_leaves_no_local_server() -> None:
    with subprocess.Popen(
        [sys.executable, "-c", STARTER], stdout=subprocess.PIPE, text=True
    ) as parent:
        try:
            assert parent.stdout is not None
            url, pid = parent.stdout.readline().split()
            assert httpx.get(f"{url}/health", timeout=10).status_code == 200
        finally:
            parent.kill()  # SIGKILL: no handler of ours runs
            parent.wait(timeout=30)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/health", timeout=2)
        except httpx.TransportError:
            return  # nothing answers on the port any more
        time.sleep(0.2)
    pytest.fail(f"the local server {pid} outlived its parent")
