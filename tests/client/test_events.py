"""``Client.events()`` / ``AsyncClient.events()`` against real servers, through a restart."""

from __future__ import annotations

import asyncio
import queue
import threading
import time

import httpx
import pytest

from corteza.client import AsyncClient, Client, ConnectError, InvalidRequestError, free_port
from corteza.client.events import Event
from corteza.server import Settings
from tests.conftest import TINY, LiveServer, start_server, stop_server
from tests.helpers import samples


def train(url: str, n: int, **extra: object) -> None:
    with httpx.Client(base_url=url, timeout=60) as http:
        for i in range(n):
            body = {"samples": samples(2, TINY.input_dim, seed=i), **extra}
            assert http.post("/train_layer2", json=body).status_code == 200


def test_events_of_one_type_with_their_data(live_server: LiveServer) -> None:
    before = time.time()
    train(live_server.url, 2)
    after = time.time()
    with Client(live_server.url) as client:
        stream = client.events(types=["batch_trained"])
        first, second = next(stream), next(stream)
        stream.close()
    assert isinstance(first, Event)
    assert (first.type, second.type) == ("batch_trained", "batch_trained")
    assert first.id < second.id
    assert (first.data["step"], second.data["step"]) == (1, 2)
    assert before <= first.time <= after
    assert {"id", "type", "time"}.isdisjoint(first.data)


def test_resumes_after_a_given_event(live_server: LiveServer) -> None:
    train(live_server.url, 3)
    with Client(live_server.url) as client:
        stream = client.events(types=["batch_trained"])
        first = next(stream)
        stream.close()
        stream = client.events(first.id, types=["batch_trained"])
        event = next(stream)
        stream.close()
    assert first.data["step"] == 1
    assert event.id > first.id and event.data["step"] == 2


def test_unknown_type_is_a_clear_error(live_server: LiveServer) -> None:
    with Client(live_server.url) as client, pytest.raises(InvalidRequestError) as caught:
        next(client.events(types=["nope"]))
    assert str(caught.value).startswith("Unknown event type nope; known: batch_trained")


def test_without_reconnect_a_lost_server_is_an_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with Client(url) as client, pytest.raises(ConnectError, match="Lost the event stream of"):
        next(client.events(reconnect=False))


def test_follows_the_server_through_a_restart_on_the_same_port(tiny_settings: Settings) -> None:
    port = free_port()
    first = start_server(tiny_settings, port)
    url = first.url
    received: queue.Queue[Event] = queue.Queue()

    def follow() -> None:
        with Client(url) as client:
            for event in client.events():
                received.put(event)
                if event.type == "batch_trained" and event.data["run_id"] == "after":
                    return

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    try:
        train(url, 2)
        before = [received.get(timeout=30) for _ in range(2)]
        assert [e.data["step"] for e in before] == [1, 2]
        first.state.events.close()  # ends the open stream, as a SIGTERM to `corteza serve` does
    finally:
        stop_server(first)
    second = start_server(Settings(model=TINY, seed=0, lr=1e-3), port)
    try:
        train(url, 1, run_id="after", seq=0)
        follower.join(timeout=30)
        assert not follower.is_alive()
    finally:
        stop_server(second)
    after = []
    while not received.empty():
        after.append(received.get())
    assert [e.type for e in after][-2:] == ["run_started", "batch_trained"]
    assert after[-1].data["step"] == 1  # the new server's first batch
    assert after[-1].id > before[-1].id  # the new server numbers on past the old one


def test_async_client_events(live_server: LiveServer) -> None:
    train(live_server.url, 2)

    async def first_two() -> list[Event]:
        async with AsyncClient(live_server.url) as client:
            stream = client.events(types=["batch_trained"])
            found = [event async for event in _take(stream, 2)]
        return found

    events = asyncio.run(first_two())
    assert [e.data["step"] for e in events] == [1, 2]


async def _take(stream, count: int):  # type: ignore[no-untyped-def]
    taken = 0
    async for event in stream:
        yield event
        taken += 1
        if taken == count:
            await stream.aclose()
            return
