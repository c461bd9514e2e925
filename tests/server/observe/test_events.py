"""``GET /v1/events``: real uvicorn, real httpx streams, real training."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from httpx_sse import connect_sse

from corteza.client import Client, StreamingTrainer
from corteza.server import Settings
from corteza.server.engine.trainer import TrainResult
from corteza.server.observe.bus import EventBus
from corteza.server.observe.events import TrainingEvents
from tests.conftest import TINY, LiveServer, start_server, stop_server
from tests.helpers import samples


def train(http: httpx.Client, n: int, *, size: int = 4, **extra: Any) -> list[dict[str, Any]]:
    answers = []
    for i in range(n):
        body = {"samples": samples(size, TINY.input_dim, seed=i), **extra}
        response = http.post("/train_layer2", json=body)
        assert response.status_code == 200, response.text
        answers.append(response.json())
    return answers


def read_events(
    http: httpx.Client, count: int, *, last_event_id: int | None = None, types: str | None = None
) -> list[dict[str, Any]]:
    """The first ``count`` messages of a real SSE stream, as (id, event, data) checked dicts."""
    headers = {} if last_event_id is None else {"Last-Event-ID": str(last_event_id)}
    params = {"types": types} if types else None
    found: list[dict[str, Any]] = []
    with connect_sse(http, "GET", "/v1/events", headers=headers, params=params) as source:
        assert source.response.status_code == 200
        for sse in source.iter_sse():
            data = json.loads(sse.data)
            assert (data["id"], data["type"]) == (int(sse.id), sse.event)
            found.append(data)
            if len(found) == count:
                break
    return found


@pytest.fixture
def stream_http(live_server: LiveServer) -> Iterator[httpx.Client]:
    with live_server.http() as client:
        yield client


def test_batches_arrive_with_increasing_ids_and_their_fields(
    live_server: LiveServer, stream_http: httpx.Client
) -> None:
    before = time.time()
    answers = train(stream_http, 3)
    after = time.time()
    events = read_events(stream_http, 3, types="batch_trained")
    assert [e["id"] for e in events] == sorted({e["id"] for e in events})
    for event, answer in zip(events, answers, strict=True):
        assert event["type"] == "batch_trained"
        assert event["step"] == answer["step"]
        assert event["loss"] == pytest.approx(answer["loss"])
        assert event["anomaly_probability"] == pytest.approx(answer["outputs"]["anomaly_prob"])
        assert event["samples"] == 4
        assert event["batch_id"] == answer["batch_id"]
        assert event["run_id"] is None and event["seq"] is None
        assert event["samples_per_second"] > 0 and event["seconds"] > 0
        assert before <= event["time"] <= after


def test_last_event_id_replays_exactly_the_missed_events(
    live_server: LiveServer, stream_http: httpx.Client
) -> None:
    train(stream_http, 2)
    seen = read_events(stream_http, 2)
    last_seen = seen[-1]["id"]
    train(stream_http, 3)
    newest = live_server.state.events.last_id
    missed = read_events(stream_http, newest - last_seen, last_event_id=last_seen)
    assert [e["id"] for e in missed] == list(range(last_seen + 1, newest + 1))
    assert [e["step"] for e in missed if e["type"] == "batch_trained"] == [3, 4, 5]


def test_bad_last_event_id_and_unknown_types_are_refused(stream_http: httpx.Client) -> None:
    bad_id = stream_http.get("/v1/events", headers={"Last-Event-ID": "abc"})
    assert bad_id.status_code == 422
    assert bad_id.json() == {
        "status": "error",
        "error": "Last-Event-ID must be a non-negative integer, got 'abc'",
        "error_type": "invalid_request",
    }
    bad_type = stream_http.get("/v1/events", params={"types": "batch_trained,bogus"})
    assert bad_type.status_code == 422
    assert bad_type.json()["error"] == (
        "Unknown event type bogus; known: batch_trained, feedback, checkpoint_saved, "
        "checkpoint_failed, run_started, run_finished, stalled, loss_improved, job_queued, "
        "job_started, job_epoch, job_finished"
    )


def test_a_subscriber_that_never_reads_neither_slows_training_nor_stays(
    live_server: LiveServer, stream_http: httpx.Client
) -> None:
    """The subscriber's socket has a tiny receive buffer and is never read; 6 MB of padding
    events fill the buffers between it and the server, so its queue overflows. Training goes
    on meanwhile (publishing never waits for a reader), and the subscriber is dropped."""
    bus = live_server.state.events
    bus.subscriber_limit = 50  # a smaller allowance than the default 500, to keep this fast
    train(stream_http, 2)
    host, port = live_server.url.removeprefix("http://").split(":")
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect((host, int(port)))
    try:
        stalled.sendall(f"GET /v1/events HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        deadline = time.monotonic() + 10
        while bus.subscribers == 0:
            assert time.monotonic() < deadline, "the subscriber never arrived"
            time.sleep(0.01)
        for _ in range(400):
            bus.publish("padding", text="x" * 16384)
        answers = train(stream_http, 20)  # while the stalled socket is still open, unread
        assert bus.dropped == 1
        assert bus.subscribers == 0
    finally:
        stalled.close()
    assert [a["step"] for a in answers] == list(range(3, 23))


def test_feedback_and_checkpoint_events(tmp_path: Path) -> None:
    live = start_server(Settings(model=TINY, seed=0, lr=1e-3, checkpoint_dir=tmp_path))
    try:
        with live.http() as http:
            (answer,) = train(http, 1)
            target = [0.1] * TINY.dendrite_dim
            feedback = http.post(
                "/feedback_dendritas",
                json={
                    "ajustes_aplicados": target,
                    "validacion": True,
                    "timestamp": "t",
                    "batch_id": answer["batch_id"],
                    "reward": 0.5,
                },
            )
            assert feedback.status_code == 200, feedback.text
            assert http.post("/v1/checkpoint").status_code == 200
            fed, saved = read_events(http, 2, types="feedback,checkpoint_saved")
    finally:
        stop_server(live)
    assert fed["type"] == "feedback"
    assert fed["batch_id"] == answer["batch_id"]
    assert (fed["validated"], fed["reward"]) == (True, 0.5)
    assert fed["dendrite_loss"] == pytest.approx(feedback.json()["dendrite_loss"])
    assert (fed["received"], fed["validated_total"], fed["success_rate"]) == (1, 1, 1.0)
    assert saved["type"] == "checkpoint_saved"
    assert (saved["step"], saved["reason"]) == (1, "request")
    folder = tmp_path / saved["name"]
    assert saved["bytes"] == sum(f.stat().st_size for f in folder.iterdir())
    assert saved["seconds"] > 0


def test_stalled_fires_once_per_lull_and_rearms() -> None:
    live = start_server(Settings(model=TINY, seed=0, lr=1e-3, stall_minutes=0.02))
    try:
        with live.http() as http:
            train(http, 1)
            (first,) = read_events(http, 1, types="stalled")
            time.sleep(1.5)  # a second period of the same lull: nothing new
            train(http, 1)
            stalls = read_events(http, 2, types="stalled")
    finally:
        stop_server(live)
    assert first["last_step"] == 1
    assert first["idle_seconds"] >= 1.2
    assert [s["last_step"] for s in stalls] == [1, 2]
    assert stalls[0]["id"] == first["id"]


def test_a_streamed_run_starts_and_finishes(live_server: LiveServer) -> None:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((12, TINY.input_dim)).astype(np.float32)
    y = (rng.random(12) > 0.5).astype(np.float32)
    with Client(live_server.url) as client:
        summary = StreamingTrainer(client, X, y, batch_size=4, feedback_every=0).run()
    assert summary.transport == "stream"
    with live_server.http() as http:
        events = read_events(http, 5, types="run_started,batch_trained,run_finished")
    assert [e["type"] for e in events] == [
        "run_started",
        "batch_trained",
        "batch_trained",
        "batch_trained",
        "run_finished",
    ]
    assert all(e["run_id"] == summary.run_id for e in events)
    assert [e["seq"] for e in events[1:4]] == [0, 1, 2]
    assert events[-1]["batches"] == 3
    assert events[-1]["last_loss"] == pytest.approx(summary.losses[-1])


def test_a_run_sent_by_rest_finishes_when_its_client_says_so(live_server: LiveServer) -> None:
    rng = np.random.default_rng(1)
    X = rng.standard_normal((8, TINY.input_dim)).astype(np.float32)
    y = (rng.random(8) > 0.5).astype(np.float32)
    with Client(live_server.url) as client:
        summary = StreamingTrainer(
            client, X, y, batch_size=4, feedback_every=0, transport="rest"
        ).run()
    assert summary.transport == "rest"
    with live_server.http() as http:
        events = read_events(http, 4, types="run_started,batch_trained,run_finished")
        again = http.post(f"/v1/runs/{summary.run_id}/finish")
        unknown = http.post("/v1/runs/nope/finish")
        live_server.state.runs.record("job-3f9c", 0, {"seq": 0})  # a job's run
        jobs = http.post("/v1/runs/job-3f9c/finish")
    assert [e["type"] for e in events] == [
        "run_started",
        "batch_trained",
        "batch_trained",
        "run_finished",
    ]
    assert events[-1]["run_id"] == summary.run_id
    assert events[-1]["batches"] == 2
    assert (jobs.status_code, jobs.json()["error_type"]) == (409, "run_busy")
    assert jobs.json()["error"] == "Run job-3f9c is a job's: it ends with the job"
    assert again.status_code == 200
    assert again.json() == {"run_id": summary.run_id, "next_seq": 2, "announced": False}
    assert unknown.status_code == 404
    assert unknown.json() == {
        "status": "error",
        "error": "No run 'nope' on this server",
        "error_type": "not_found",
    }


def _result(loss: float, step: int) -> TrainResult:
    return TrainResult(
        batch_size=2,
        epochs=1,
        losses=[loss],
        probabilities=np.array([0.2, 0.4], np.float32),
        dendrites=[],
        coherence=[],
        capa_means=(0.0, 0.0, 0.0),
        step=step,
        seconds=0.01,
    )


def test_loss_improved_needs_the_margin_or_the_threshold() -> None:
    bus = EventBus()
    events = TrainingEvents(bus, margin=0.1, loss_below=0.5, stall_seconds=60)
    answer = {"batch_id": "b", "run_id": None, "seq": None}
    for step, loss in enumerate([1.0, 0.95, 0.89, 0.85, 0.55, 0.49, 0.45, 0.40], start=1):
        events.batch_trained(_result(loss, step), answer)
    improved = [e.data for e in asyncio.run(_drain(bus)) if e.type == "loss_improved"]
    assert improved == [
        {"step": 3, "loss": 0.89, "previous_best": 1.0},  # 11% better
        {"step": 5, "loss": 0.55, "previous_best": 0.89},  # 0.85 was only 4.5% better
        {"step": 6, "loss": 0.49, "previous_best": 0.55},  # crossed 0.5 by less than 10%
        {"step": 8, "loss": 0.40, "previous_best": 0.49},
    ]


async def _drain(bus: EventBus) -> list[Any]:
    found = []
    bus.close()
    async for event in bus.subscribe(None):
        found.append(event)
    return found


def test_replay_after_a_restart_sends_everything_buffered() -> None:
    """A Last-Event-ID beyond this bus's newest event came from an earlier process."""
    bus = EventBus(capacity=3, first_id=1)
    for step in range(5):
        bus.publish("batch_trained", step=step)

    async def ids(last: int | None) -> list[int]:
        return [e.id async for e in bus.subscribe(last)]

    bus.close()
    assert asyncio.run(ids(None)) == [3, 4, 5]
    assert asyncio.run(ids(4)) == [5]
    assert asyncio.run(ids(5)) == []
    assert asyncio.run(ids(99)) == [3, 4, 5]


def test_a_later_bus_numbers_past_an_earlier_one() -> None:
    """A restarted server's ids follow its previous process's, so a client resuming
    with the old Last-Event-ID gets every new event, however many the old one had."""
    old = EventBus()
    for step in range(2000):
        old.publish("batch_trained", step=step)
    old.close()
    new = EventBus()
    for step in range(3):
        new.publish("batch_trained", step=step)
    new.close()

    async def steps(last: int) -> list[int]:
        return [e.data["step"] async for e in new.subscribe(last)]

    assert new.recent()[0].id > old.last_id
    assert asyncio.run(steps(old.last_id)) == [0, 1, 2]
    assert new.last_id < 2**53  # exact in JavaScript's numbers
