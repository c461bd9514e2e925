"""Streaming training against real servers: uvicorn on 127.0.0.1, stopped and restarted."""

from __future__ import annotations

import functools
import re
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from corteza.client import (
    Client,
    ConnectError,
    Dataset,
    DimensionMismatchError,
    InvalidDataError,
    ProtocolError,
    free_port,
    iter_batches,
    make_dataset,
)
from corteza.client.backoff import Backoff
from corteza.client.saved_server import follow_saved_server, save_server
from corteza.client.training import channel as channel_module
from corteza.client.training.batches import Batches
from corteza.client.training.channel import websocket_url
from corteza.client.training.fit import fit
from corteza.client.training.progress import BatchReport
from corteza.client.training.stream import StreamingTrainer
from corteza.server import Settings
from tests.conftest import TINY, LiveServer, start_server, stop_server

FAST = Backoff(first=0.05, maximum=0.2)  # retry quickly: these servers are on loopback


@pytest.fixture
def data() -> Dataset:
    return make_dataset(60, input_dim=TINY.input_dim, seed=1)


@pytest.fixture
def checkpoints(tmp_path: Path) -> Settings:
    return Settings(
        model=TINY, seed=0, lr=1e-3, checkpoint_dir=tmp_path / "ckpt", checkpoint_every=1000
    )


@pytest.fixture
def servers() -> Iterator[list[LiveServer]]:
    """Servers a test starts; each stopped at the end if still running."""
    started: list[LiveServer] = []
    yield started
    for live in started:
        if live.thread.is_alive():
            stop_server(live)


def applied(live: LiveServer, run_id: str | None) -> list[int]:
    """The seqs of the run in the server's weights: 0 .. next_seq - 1, each once."""
    assert run_id is not None
    run = live.state.runs.get(run_id)
    assert run is not None
    return list(range(run.next_seq))


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def __call__(self, kind: str, message: str) -> None:
        self.seen.append((kind, message))

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.seen]

    def of(self, kind: str) -> list[str]:
        return [message for k, message in self.seen if k == kind]


# ---------------------------------------------------------------- batches


def test_batches_are_regenerated_exactly_as_iter_batches_gives_them(data: Dataset) -> None:
    batches = Batches(data.X, data.y, 16, 7, 3)
    expected = [
        pair
        for epoch in range(3)
        for pair in iter_batches(data.X, data.y, batch_size=16, seed=7, epoch=epoch)
    ]
    assert batches.total == len(expected) == 12
    for seq in [5, 0, 11, 3, 8, 4]:  # any order: nothing is held between calls
        x, y = batches.get(seq)
        np.testing.assert_array_equal(x, expected[seq][0])
        np.testing.assert_array_equal(y, expected[seq][1])
        assert batches.size(seq) == len(x)


def test_websocket_url_keeps_the_scheme_and_a_path_prefix() -> None:
    assert websocket_url("http://h:8000/") == "ws://h:8000/v1/train/stream"
    assert websocket_url("https://x.example/corteza") == "wss://x.example/corteza/v1/train/stream"


# ---------------------------------------------------------------- a whole run


def test_fit_streams_every_batch_exactly_once(live_server: LiveServer, data: Dataset) -> None:
    reports: list[BatchReport] = []
    with Client(live_server.url) as client:
        summary = fit(client, data.X, data.y, epochs=2, batch_size=8, on_batch=reports.append)
    assert summary.transport == "stream"
    assert summary.samples == live_server.state.stats.total_samples == 120
    assert summary.batches == 16
    assert applied(live_server, summary.run_id) == list(range(16))
    assert [r.index for r in reports] == list(range(1, 17))
    assert [r.epoch for r in reports] == [0] * 8 + [1] * 8
    assert all(r.response is None and r.loss is not None for r in reports)
    assert len(summary.losses) == 16
    assert summary.feedback_sent == live_server.state.stats.feedback_received == 3


def test_no_stream_sends_one_request_per_batch_with_run_and_seq(
    live_server: LiveServer, data: Dataset
) -> None:
    with Client(live_server.url) as client:
        summary = fit(client, data.X, data.y, batch_size=8, stream=False, feedback_every=0)
    assert summary.transport == "rest"
    assert summary.run_id is not None and len(summary.run_id) == 32  # uuid4().hex
    assert applied(live_server, summary.run_id) == list(range(8))
    assert live_server.state.stats.total_samples == 60


class CountingConnection:
    """A real connection that counts frames sent and not yet acknowledged."""

    def __init__(self, ws: Any, seen: list[int]) -> None:
        self.ws = ws
        self.seen = seen
        self.in_flight = 0

    def send(self, message: Any) -> None:
        if isinstance(message, bytes):
            self.in_flight += 1
            self.seen.append(self.in_flight)
        self.ws.send(message)

    def recv(self, timeout: float | None = None) -> Any:
        message = self.ws.recv(timeout=timeout)
        if '"type": "ack"' in message or '"type":"ack"' in message:
            self.in_flight -= 1
        return message

    def __enter__(self) -> CountingConnection:
        self.ws.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.ws.__exit__(*exc)


@pytest.mark.parametrize(("asked", "largest", "granted"), [(3, 16, 3), (8, 2, 2)])
def test_the_window_is_never_exceeded(
    asked: int,
    largest: int,
    granted: int,
    monkeypatch: pytest.MonkeyPatch,
    servers: list[LiveServer],
    data: Dataset,
) -> None:
    settings = Settings(model=TINY, seed=0, lr=1e-3, stream_window=largest)
    servers.append(live := start_server(settings))
    seen: list[int] = []
    real_connect = channel_module.connect
    monkeypatch.setattr(
        channel_module, "connect", lambda *a, **k: CountingConnection(real_connect(*a, **k), seen)
    )
    with Client(live.url) as client:
        trainer = StreamingTrainer(client, data.X, data.y, batch_size=4, window=asked)
        summary = trainer.run()
    assert summary.batches == 15
    assert max(seen) == trainer.max_in_flight == granted
    assert applied(live, summary.run_id) == list(range(15))


def test_until_loss_stops_sending_and_counts_the_window_in_flight(
    live_server: LiveServer, data: Dataset
) -> None:
    with Client(live_server.url) as client:
        summary = fit(client, data.X, data.y, batch_size=4, until_loss=50.0, window=4)
    assert summary.reached_target
    assert 5 <= summary.batches <= 8  # 5 to reach it, up to 3 more already in flight
    assert applied(live_server, summary.run_id) == list(range(summary.batches))
    assert summary.samples == live_server.state.stats.total_samples


def test_a_new_process_resumes_a_run_by_its_id(live_server: LiveServer, data: Dataset) -> None:
    with Client(live_server.url) as client:
        first = fit(client, data.X, data.y, batch_size=4, until_loss=50.0, window=1)
        assert first.batches == 5
        events = Events()
        second = fit(client, data.X, data.y, batch_size=4, run_id=first.run_id, on_event=events)
    assert second.run_id == first.run_id
    assert second.batches == 15  # every seq once: 5 trained before, counted without answers
    assert len(second.losses) == 10
    assert applied(live_server, first.run_id) == list(range(15))
    assert events.of("connected") == [
        f"streaming to {live_server.url}: run {first.run_id} from batch 5, window 4"
    ]


def test_a_refused_batch_raises_the_servers_error(live_server: LiveServer) -> None:
    X = np.zeros((8, TINY.input_dim + 1), dtype=np.float32)
    y = np.zeros(8, dtype=np.float32)
    with Client(live_server.url, check=False) as client, pytest.raises(DimensionMismatchError) as e:
        fit(client, X, y, batch_size=4)
    assert str(e.value) == f"Input dimension mismatch: expected {TINY.input_dim}D, got 33D"
    with Client(live_server.url) as client, pytest.raises(InvalidDataError) as local:
        fit(client, X, y, batch_size=4)
    assert str(local.value) == str(e.value)
    assert live_server.state.stats.total_batches == 0


# ---------------------------------------------------------------- when the server goes away


def test_an_unreachable_server_is_waited_for_until_give_up_after(data: Dataset) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    events = Events()
    with Client(url) as client, pytest.raises(ConnectError) as error:
        StreamingTrainer(
            client, data.X, data.y, on_event=events, backoff=FAST, give_up_after=0.5
        ).run()
    assert str(error.value).startswith(f"Cannot reach {url} (")
    given_up = re.search(r"gave up after ([0-9.]+) s$", str(error.value))
    assert given_up is not None and float(given_up.group(1)) >= 0.5  # not before give_up_after
    waiting = events.of("waiting")
    assert len(waiting) >= 3
    assert waiting[0].startswith(f"server {url} unreachable (")
    assert waiting[0].endswith("retrying in 0.05 s")


def _restart_later(
    live: LiveServer,
    settings: Settings,
    servers: list[LiveServer],
    *,
    port: int | None = None,
    then: Any = None,
) -> threading.Thread:
    """Stop ``live`` now; start a server with ``settings`` 0.3 s later, on ``port``."""
    stop_server(live)

    def later() -> None:
        time.sleep(0.3)
        servers.append(start_server(settings, port))
        if then is not None:
            then(servers[-1])

    thread = threading.Thread(target=later, daemon=True)
    thread.start()
    return thread


def test_a_run_survives_a_server_restart(
    checkpoints: Settings, servers: list[LiveServer], data: Dataset
) -> None:
    port = free_port()
    servers.append(first := start_server(checkpoints, port))
    events = Events()
    restarts: list[threading.Thread] = []

    def on_batch(report: BatchReport) -> None:
        if report.index == 4:
            restarts.append(_restart_later(first, checkpoints, servers, port=port))

    with Client(first.url) as client:
        summary = StreamingTrainer(
            client,
            data.X,
            data.y,
            epochs=2,
            batch_size=4,
            on_batch=on_batch,
            on_event=events,
            backoff=FAST,
        ).run()
    restarts[0].join()
    second = servers[-1]
    assert second is not first
    assert summary.batches == 30 and summary.samples == 120
    assert applied(second, summary.run_id) == list(range(30))  # each once, across both
    assert second.state.stats.total_samples == 120
    assert "waiting" in events.kinds()
    assert events.of("resumed")[0].startswith(f"resumed run {summary.run_id} at {first.url}")


def test_a_server_that_lost_the_run_gets_it_again(
    tmp_path: Path, servers: list[LiveServer], data: Dataset
) -> None:
    port = free_port()
    settings = Settings(model=TINY, seed=0, lr=1e-3)  # no checkpoints: a restart forgets
    servers.append(first := start_server(settings, port))
    events = Events()
    stopped: list[threading.Thread] = []

    def on_batch(report: BatchReport) -> None:
        if report.index == 4:
            stopped.append(_restart_later(first, settings, servers, port=port))

    with Client(first.url) as client:
        summary = StreamingTrainer(
            client,
            data.X,
            data.y,
            batch_size=4,
            on_batch=on_batch,
            on_event=events,
            backoff=FAST,
        ).run()
    stopped[0].join()
    assert summary.batches == 15 and summary.samples == 60  # each seq counted once
    assert applied(servers[-1], summary.run_id) == list(range(15))  # trained from 0 again
    [warning] = events.of("warning")
    assert warning.startswith(f"the server holds run {summary.run_id} up to batch 0 only; ")


def test_a_new_url_is_picked_up_from_the_saved_server(
    checkpoints: Settings,
    servers: list[LiveServer],
    data: Dataset,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CORTEZA_CONFIG_DIR", str(tmp_path / "config"))
    servers.append(first := start_server(checkpoints))
    save_server(first.url, token=None)
    events = Events()
    moved: list[threading.Thread] = []

    def on_batch(report: BatchReport) -> None:
        if report.index == 4:  # the tunnel restarts under a new URL; `corteza connect NEW`
            moved.append(
                _restart_later(first, checkpoints, servers, then=lambda s: save_server(s.url))
            )

    with Client(first.url) as client:
        summary = StreamingTrainer(
            client,
            data.X,
            data.y,
            batch_size=4,
            on_batch=on_batch,
            on_event=events,
            backoff=FAST,
        ).run()
    moved[0].join()
    second = servers[-1]
    assert second.url != first.url
    assert applied(second, summary.run_id) == list(range(15))
    assert any(m.startswith(f"server {first.url} unreachable") for m in events.of("waiting"))
    assert events.of("resumed")[-1].startswith(f"resumed run {summary.run_id} at {second.url}")


def test_a_run_follows_the_saved_server_only_if_it_began_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CORTEZA_CONFIG_DIR", str(tmp_path))
    save_server("http://a:1", token="first")
    elsewhere = follow_saved_server("http://b:2", "mine")
    here = follow_saved_server("http://a:1", "first")
    save_server("http://c:3", token="second")  # the tunnel came back elsewhere
    assert elsewhere() == ("http://b:2", "mine")
    assert here() == ("http://c:3", "second")


# ---------------------------------------------------------------- servers without the stream


def refusing_websockets(app: ASGIApp) -> ASGIApp:
    """The app behind something that refuses every WebSocket upgrade (HTTP 403)."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await app(scope, receive, send)

    return wrapped


@pytest.mark.parametrize(
    ("ws", "asgi", "status"),
    [("auto", refusing_websockets, 403), ("none", None, 404)],
    ids=["upgrade-refused", "no-websocket-support"],
)
def test_a_server_without_the_stream_gets_one_request_per_batch(
    ws: str,
    asgi: Any,
    status: int,
    servers: list[LiveServer],
    data: Dataset,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = uvicorn.Config  # conftest's start_server, its app behind `asgi`, on uvicorn's `ws`
    monkeypatch.setattr(
        uvicorn, "Config", lambda app, **k: config(app if asgi is None else asgi(app), ws=ws, **k)
    )
    servers.append(live := start_server(Settings(model=TINY, seed=0, lr=1e-3)))
    events = Events()
    with Client(live.url) as client:
        summary = fit(client, data.X, data.y, batch_size=4, epochs=2, on_event=events)
    assert events.of("fallback") == [
        f"WebSocket unavailable at {live.url} (HTTP {status}): falling back to one request "
        "per batch"
    ]
    assert summary.transport == "rest"
    assert summary.batches == 30 and len(summary.losses) == 30
    assert applied(live, summary.run_id) == list(range(30))
    assert live.state.stats.feedback_received == 6


def test_a_url_that_is_not_corteza_is_an_error_not_a_wait(tmp_path: Path, data: Dataset) -> None:
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    other = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{other.server_address[1]}"
    try:
        with Client(url) as client, pytest.raises(ProtocolError) as error:
            fit(client, data.X, data.y, give_up_after=30)
    finally:
        other.shutdown()
        other.server_close()
    assert str(error.value) == (
        f"{url}/health answered HTTP 404 without corteza's error body; is this a corteza server?"
    )


def test_streamed_feedback_names_the_acknowledged_batch(live_server: LiveServer) -> None:
    """With a window in flight, "the latest batch" is not the one the ack is about."""
    data = make_dataset(64, input_dim=TINY.input_dim, seed=5)
    feedback = live_server.state.worker.feedback
    trained: list[str] = []  # the server's batch ids, in training order
    seen: list[str | None] = []  # the ids feedback named
    remember, resolve = feedback.remember, feedback.resolve

    def remember_spy(inputs: Any) -> str:
        trained.append(remember(inputs))
        return trained[-1]

    def resolve_spy(batch_id: str | None) -> str | None:
        seen.append(batch_id)
        return resolve(batch_id)

    feedback.remember = remember_spy  # type: ignore[method-assign]
    feedback.resolve = resolve_spy  # type: ignore[method-assign]
    with Client(live_server.url) as client:
        summary = fit(client, data.X, data.y, batch_size=4, feedback_every=2, window=4)
    assert summary.feedback_sent == 8
    assert len(trained) == 16
    # Feedback after batches 2, 4, ..., 16 names exactly those batches, not the latest trained.
    assert seen == trained[1::2]
