"""A real headless Chromium on a page of another site: its <img> and no-cors fetch reach a
token-free loopback server and are refused, so no export or download starts."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.util import find_spec
from typing import Any

import httpx
import pytest

from corteza.client import free_port
from tests.browser.test_dashboard import browser as browser
from tests.conftest import LiveServer

if find_spec("playwright") is not None:  # optional: the browser fixture skips without it
    from playwright.sync_api import Browser


@pytest.fixture
def other_site(live_server: LiveServer) -> Iterator[str]:
    """A page on http://localhost:OTHER (another site than 127.0.0.1) aiming at the server."""
    target = live_server.url
    html = f"""<!doctype html><html><body>
<img src="{target}/v1/export/onnx">
<img src="{target}/v1/checkpoint/files/model.safetensors">
<script>fetch("{target}/train_layer2", {{method: "POST", mode: "no-cors",
  body: '{{"samples": []}}'}}).catch(() => {{}}).finally(() => document.title = "sent");</script>
</body></html>""".encode()

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(html)))
            self.end_headers()
            self.wfile.write(html)

        def log_message(self, *args: Any) -> None:
            pass

    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{port}/"
    finally:
        server.shutdown()
        server.server_close()


def _answers(http: httpx.Client) -> dict[tuple[str, str], float]:
    """(method, status) -> requests answered, from the server's own metrics."""
    counts: dict[tuple[str, str], float] = {}
    for line in http.get("/metrics").text.splitlines():
        if line.startswith("corteza_http_requests_total{"):
            labels = dict(
                part.split("=") for part in line[line.index("{") + 1 : line.index("}")].split(",")
            )
            key = (labels["method"].strip('"'), labels["status"].strip('"'))
            counts[key] = counts.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


def test_an_img_and_a_no_cors_fetch_from_another_site_are_refused(
    browser: Browser,
    live_server: LiveServer,
    http: httpx.Client,
    other_site: str,
) -> None:
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(other_site)
        page.wait_for_function("document.title === 'sent'", timeout=15_000)
        page.wait_for_load_state("load")
    finally:
        context.close()
    # The refusals come before routing; what matters is that nothing else was answered.
    assert _answers(http) == {("GET", "403"): 2.0, ("POST", "403"): 1.0}
    assert live_server.state.stats.total_batches == 0
