"""A web page of another site cannot drive a token-free loopback server, even with an <img>.

The headers are those Chromium sends (captured from Chromium 131); the seed's
Node client, which sends no Sec-Fetch-Site, keeps working.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import httpx
import pytest

from corteza.server import Settings
from tests.conftest import TINY, LiveServer, start_server, stop_server
from tests.helpers import samples

# What Chromium sends for <img src="http://127.0.0.1:PORT/..."> on a page of another site.
IMG_FROM_ANOTHER_SITE = {
    "Sec-Fetch-Site": "cross-site",
    "Sec-Fetch-Mode": "no-cors",
    "Sec-Fetch-Dest": "image",
    "Accept": "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8",
    "Referer": "https://evil.example/",
}
# The same from http://localhost:3000 (another port is the same site, not the same origin).
IMG_FROM_ANOTHER_PORT = {**IMG_FROM_ANOTHER_SITE, "Sec-Fetch-Site": "same-site"}
# A link to the server clicked on another site.
LINK_FROM_ANOTHER_SITE = {
    "Sec-Fetch-Site": "cross-site",
    "Sec-Fetch-Mode": "navigate",
    "Sec-Fetch-Dest": "document",
    "Sec-Fetch-User": "?1",
}
# The dashboard's own fetch, and the user typing the URL.
SAME_ORIGIN_FETCH = {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors"}
TYPED_URL = {"Sec-Fetch-Site": "none", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}


def _refusal(site: str) -> dict[str, str]:
    return {
        "status": "error",
        "error": (
            f"Cross-site request refused (Sec-Fetch-Site: {site}): a web page of another site "
            "may not call this server; start it with --cors-origin ORIGIN to allow that page"
        ),
        "error_type": "forbidden_origin",
    }


@pytest.mark.parametrize(
    ("path", "headers", "site"),
    [
        ("/v1/export/onnx", IMG_FROM_ANOTHER_SITE, "cross-site"),
        ("/v1/checkpoint/files/model.safetensors", IMG_FROM_ANOTHER_SITE, "cross-site"),
        ("/status", IMG_FROM_ANOTHER_PORT, "same-site"),
        ("/v1/export/onnx", LINK_FROM_ANOTHER_SITE, "cross-site"),
    ],
)
def test_a_page_of_another_site_is_refused(
    http: httpx.Client, path: str, headers: dict[str, str], site: str
) -> None:
    response = http.get(path, headers=headers)
    assert response.status_code == 403
    assert response.json() == _refusal(site)


def test_a_cross_site_post_without_origin_is_refused_and_trains_nothing(
    live_server: LiveServer, http: httpx.Client
) -> None:
    body = {"samples": samples(2, TINY.input_dim)}
    response = http.post("/train_layer2", json=body, headers=IMG_FROM_ANOTHER_SITE)
    assert response.status_code == 403
    assert live_server.state.stats.total_batches == 0


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/health", IMG_FROM_ANOTHER_SITE),
        ("/", LINK_FROM_ANOTHER_SITE),  # the dashboard's shell holds no data
        ("/status", SAME_ORIGIN_FETCH),
        ("/status", TYPED_URL),
        ("/status", {}),  # not a browser: Python, curl
        ("/status", {"Sec-Fetch-Mode": "cors"}),  # Node's fetch sends only this one
    ],
)
def test_same_origin_typed_urls_and_other_clients_pass(
    http: httpx.Client, path: str, headers: dict[str, str]
) -> None:
    assert http.get(path, headers=headers).status_code == 200


def test_a_listed_cors_origin_may_call_cross_site() -> None:
    live = start_server(Settings(model=TINY, cors_origins=["https://app.example"]))
    try:
        with live.http() as http:
            listed = http.get(
                "/status",
                headers={
                    **SAME_ORIGIN_FETCH,
                    "Sec-Fetch-Site": "cross-site",
                    "Origin": "https://app.example",
                },
            )
            unlisted = http.get("/status", headers=IMG_FROM_ANOTHER_SITE)
    finally:
        stop_server(live)
    assert listed.status_code == 200
    assert unlisted.status_code == 403


NODE_CLIENT = """
const url = process.argv[1];
const input = Array.from({length: %d}, (_, i) => (i %% 7) / 7);
(async () => {
  const status = await fetch(url + "/status");
  const trained = await fetch(url + "/train_layer2", {
    method: "POST",
    headers: {"Content-Type": "application/json"},
    body: JSON.stringify({samples: [{input_data: input, anomaly_label: 1}], epochs: 1}),
  });
  const body = await trained.json();
  console.log(JSON.stringify([status.status, trained.status, body.status]));
})();
"""


def test_the_seed_clients_node_process_keeps_working(live_server: LiveServer) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    done = subprocess.run(
        [node, "-e", NODE_CLIENT % TINY.input_dim, live_server.url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [200, 200, "trained"]
