"""The dashboard in a real headless Chromium (the Debian package) against a real server.

The server needs a token; batches train through the real client in a thread
while the page follows them over the event stream.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from importlib.util import find_spec
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from corteza.client import Client, make_dataset
from corteza.server import Settings
from corteza.server.edge.routes.dashboard import CONTENT_SECURITY_POLICY
from tests.conftest import TINY, LiveServer, start_server, stop_server

CHROMIUM = Path("/usr/bin/chromium")
TOKEN = "dashboard-token-0123456789"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
BAD_TOKEN = "The token in this link is not accepted by the server. Use the link the server printed."
NO_TOKEN = "This server needs a token. Open the link the server printed (it ends with #token=...)."

if find_spec("playwright") is not None:
    from playwright.sync_api import Browser, Page, expect, sync_playwright


def _missing() -> str | None:
    if find_spec("playwright") is None:
        return "playwright is not installed: pip install -e '.[dev]'"
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing: apt-get install chromium"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    reason = _missing()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the browser test: {reason}")
        pytest.skip(reason)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = Settings(
        model=TINY,
        seed=0,
        lr=3e-3,
        token=TOKEN,
        checkpoint_dir=tmp_path_factory.mktemp("checkpoints"),
    )
    live = start_server(settings)
    try:
        yield live
    finally:
        stop_server(live)


@pytest.fixture
def page(browser: Browser, server: LiveServer) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        yield page
    finally:
        context.close()


class Trainer(threading.Thread):
    """Trains batches through the real client until stopped, with feedback every 5."""

    def __init__(self, url: str) -> None:
        super().__init__(name="dashboard-trainer", daemon=True)
        self.url = url
        self.stop = threading.Event()
        self.batches = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        data = make_dataset(4096, input_dim=TINY.input_dim, seed=3)
        try:
            with Client(self.url, token=TOKEN) as client:
                while not self.stop.wait(0.03):
                    start = (self.batches * 16) % (len(data) - 16)
                    answer = client.train_batch(
                        data.X[start : start + 16], data.y[start : start + 16]
                    )
                    self.batches += 1
                    if self.batches % 5 == 0:
                        client.send_feedback(
                            answer.outputs.dendrite_adjustments,
                            self.batches % 10 == 0,
                            batch_id=answer.batch_id,
                        )
        except BaseException as exc:  # reported by the test
            self.error = exc

    def finish(self) -> int:
        self.stop.set()
        self.join(timeout=30)
        assert self.error is None, self.error
        return self.batches


def _points(page: Page) -> int:
    return int(page.locator("#chart").get_attribute("data-points") or 0)


def _number(page: Page, selector: str) -> float:
    return float(page.locator(selector).inner_text().replace(",", ""))


def test_the_page_follows_training_live(
    page: Page, server: LiveServer, figure: Callable[[str], None]
) -> None:
    origin = urlsplit(server.url)
    requests: list[str] = []
    problems: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))

    response = page.goto(f"{server.url}/#token={TOKEN}")
    assert response is not None and response.status == 200
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    expect(page.locator("#connection")).to_have_text("live")
    assert page.url == f"{server.url}/"  # the token left the address bar
    before = _points(page)

    trainer = Trainer(server.url)
    trainer.start()
    try:
        page.wait_for_function(
            "n => Number(document.querySelector('#chart').dataset.points) >= n + 40", arg=before
        )
        expect(page.locator("#card-feedback")).not_to_have_text("–")
    finally:
        trained = trainer.finish()
    page.wait_for_function(
        "n => Number(document.querySelector('#chart').dataset.points) >= n", arg=before + trained
    )
    step = server.state.trainer.step
    expect(page.locator("#card-step")).to_have_text(f"{step:,}")
    assert _number(page, "#card-rate") > 0
    expect(page.locator("#card-best")).to_have_text(f"{server.state.stats.best_loss:.4f}")
    assert page.locator("#chart canvas").count() == 1
    for kind in ("batch_trained", "feedback", "loss_improved"):
        expect(page.locator(f"#events .type[data-type={kind}]").first).to_be_visible()
    expect(page.locator("#auth-error")).to_be_hidden()

    total = server.state.stats.total_samples
    expect(page.locator("#footer")).to_contain_text(f"{total:,} samples trained")  # a poll
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    points = page.locator("#chart").get_attribute("data-points")
    figure(f"dashboard: chart_points={points} screenshot={ARTIFACTS.name}/dashboard.png")
    foreign = [url for url in requests if urlsplit(url)[:2] != origin[:2]]
    assert foreign == []
    assert problems == []


def test_save_and_download_the_model(page: Page, server: LiveServer) -> None:
    page.goto(f"{server.url}/#token={TOKEN}")
    expect(page.locator("#connection")).to_have_text("live")
    page.click("#save-checkpoint")
    notice = page.locator("#notice")
    expect(notice).to_contain_text("Saved checkpoint")
    saved = server.state.checkpointer.last_path
    assert saved is not None
    assert notice.inner_text() == (
        f"Saved checkpoint {saved.name} at step {server.state.trainer.step:,}."
    )
    with page.expect_download() as info:
        page.click("#download-model")
    download = info.value
    assert download.suggested_filename == f"{saved.name}-model.safetensors"
    assert Path(download.path()).read_bytes() == (saved / "model.safetensors").read_bytes()
    expect(notice).to_contain_text(f"Downloaded {saved.name}-model.safetensors")


@pytest.mark.parametrize(("fragment", "message"), [("#token=wrong", BAD_TOKEN), ("", NO_TOKEN)])
def test_a_refused_token_is_explained(
    page: Page, server: LiveServer, fragment: str, message: str
) -> None:
    statuses: list[Any] = []
    page.on("response", lambda response: statuses.append((response.url, response.status)))
    page.goto(f"{server.url}/{fragment}")
    expect(page.locator("#auth-error")).to_be_visible()
    expect(page.locator("#auth-error")).to_have_text(message)
    expect(page.locator("#connection")).to_have_text("not authorised")
    assert (f"{server.url}/status", 401) in statuses


def test_the_event_parser_survives_any_chunking(page: Page, server: LiveServer) -> None:
    """sse-starlette ends lines with CRLF; a chunk may end between the CR and the LF."""
    page.goto(f"{server.url}/#token={TOKEN}")
    chunks = [
        "id: 7\r",
        '\nevent: batch_trained\r\ndata: {"a"',
        ":1}\r\n\r",
        "\n: ping\r\n\r\n",
        "data: x\ndata: y\n\nid: 8\nevent: bare\n\n",
    ]
    messages = page.evaluate(
        """async (chunks) => {
            const { SseParser } = await import("./static/sse.js");
            const parser = new SseParser();
            return chunks.flatMap((chunk) => parser.push(chunk));
        }""",
        chunks,
    )
    assert messages == [
        {"id": "7", "event": "batch_trained", "data": '{"a":1}'},
        {"id": None, "event": "message", "data": "x\ny"},
    ]


def test_the_page_shows_the_running_job_and_its_epochs(page: Page, server: LiveServer) -> None:
    data = make_dataset(400, input_dim=TINY.input_dim, seed=9)
    sha = server.state.datasets.add_arrays(data.X, data.y, name="sensor.npz").sha256
    page.goto(f"{server.url}/#token={TOKEN}")
    expect(page.locator("#connection")).to_have_text("live")
    with Client(server.url, token=TOKEN) as client:
        job = client.start_job(sha, epochs=3, batch_size=16)
        final = list(client.watch_job(job.id, interval=0.05))[-1]
    expect(page.locator("#job-panel")).to_be_visible()
    expect(page.locator("#job-title")).to_have_text(f"{job.id} · finished · sensor.npz")
    expect(page.locator("#job-progress")).to_contain_text("epoch 3/3 · batch 60/60 · 960 samples")
    expect(page.locator("#job-epochs tbody tr")).to_have_count(3)
    aucs = page.locator("#job-epochs tbody tr td:nth-child(3)").all_inner_texts()
    assert aucs == [f"{e.holdout_auc:.4f}" for e in final.epochs_scored]
    expect(page.locator("#events .type[data-type=job_finished]").first).to_be_visible()
