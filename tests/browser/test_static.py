"""``GET /`` and ``/static``: served without a token, under a strict CSP, nothing else exposed."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from corteza.server import Settings
from corteza.server.edge.routes.dashboard import CONTENT_SECURITY_POLICY, STATIC_DIR
from tests.conftest import TINY, LiveServer, start_server, stop_server

TOKEN = "static-token-0123456789"


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    live = start_server(Settings(model=TINY, token=TOKEN))
    try:
        yield live
    finally:
        stop_server(live)


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/", "text/html; charset=utf-8"),
        ("/static/dashboard.js", "text/javascript; charset=utf-8"),
        ("/static/dashboard.css", "text/css; charset=utf-8"),
        ("/static/chart.js", "text/javascript; charset=utf-8"),
        ("/static/sse.js", "text/javascript; charset=utf-8"),
        ("/static/vendor/uplot/uPlot.iife.min.js", "text/javascript; charset=utf-8"),
    ],
)
def test_the_page_and_its_files_need_no_token(
    server: LiveServer, path: str, content_type: str
) -> None:
    with server.http() as http:
        response = http.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"


@pytest.mark.parametrize(
    "path", ["/static/missing.js", "/static/..%2f__init__.py", "/static/%2e%2e%2fapp.py"]
)
def test_nothing_outside_the_static_folder_is_served(server: LiveServer, path: str) -> None:
    with server.http(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        response = http.get(path)
    assert response.status_code == 404
    assert response.json() == {"status": "error", "error": "Not Found", "error_type": "not_found"}


def test_the_api_still_needs_the_token(server: LiveServer) -> None:
    with server.http() as http:
        assert http.get("/status").status_code == 401
        answer = http.get("/status", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200


def test_the_page_loads_only_its_own_files_and_no_inline_code() -> None:
    html = (STATIC_DIR / "index.html").read_text()
    references = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert references == [
        "data:,",
        "static/vendor/uplot/uPlot.min.css",
        "static/dashboard.css",
        "static/vendor/uplot/uPlot.iife.min.js",
        "static/dashboard.js",
    ]
    for reference in references[1:]:
        assert (STATIC_DIR / reference.removeprefix("static/")).is_file()
    assert "<style" not in html
    assert " style=" not in html
    assert re.findall(r"<script[^>]*>", html) == [
        '<script src="static/vendor/uplot/uPlot.iife.min.js" defer>',
        '<script type="module" src="static/dashboard.js">',
    ]
    for script in ("dashboard.js", "chart.js", "sse.js"):
        code = (STATIC_DIR / script).read_text()
        assert "innerHTML" not in code  # server text reaches the page as textContent only
        assert "eval(" not in code
    assert "MIT License" in (STATIC_DIR / "vendor/uplot/LICENSE").read_text()
