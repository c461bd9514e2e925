"""A run id belongs to its data and settings, and to one live connection at a time."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
from websockets.sync.client import connect

from corteza.client import Client, InvalidRequestError, make_dataset
from corteza.client.training.batches import Batches
from corteza.client.training.fit import fit
from corteza.wire import PROTOCOL_VERSION
from tests.conftest import TINY, LiveServer
from tests.helpers import samples, wait_until


def _data(seed: int) -> tuple[np.ndarray, np.ndarray]:
    data = make_dataset(40, input_dim=TINY.input_dim, seed=seed)
    return data.X, data.y


def test_fitting_the_same_run_twice_trains_nothing_twice_and_says_so(
    live_server: LiveServer,
) -> None:
    X, y = _data(1)
    with Client(live_server.url) as client:
        first = fit(client, X, y, batch_size=8, run_id="exp", feedback_every=0)
        trained = live_server.state.stats.total_batches
        second = fit(client, X, y, batch_size=8, run_id="exp", feedback_every=0)
    assert (first.batches, first.resumed_batches) == (5, 0)
    assert (second.batches, second.resumed_batches) == (5, 5)  # held, not trained again
    assert live_server.state.stats.total_batches == trained == 5


@pytest.mark.parametrize("stream", [True, False])
def test_a_reused_run_id_on_other_data_is_a_conflict_naming_both(
    live_server: LiveServer, stream: bool
) -> None:
    X, y = _data(1)
    other_X, other_y = _data(2)
    with Client(live_server.url) as client:
        fit(client, X, y, batch_size=8, run_id="mine", feedback_every=0, stream=stream)
        trained = live_server.state.stats.total_batches
        with pytest.raises(InvalidRequestError) as info:
            fit(
                client,
                other_X,
                other_y,
                batch_size=8,
                run_id="mine",
                feedback_every=0,
                stream=stream,
            )
    known = Batches(X, y, 8, 0, 1).fingerprint()
    given = Batches(other_X, other_y, 8, 0, 1).fingerprint()
    assert info.value.status == 409
    assert info.value.error_type == "run_conflict"
    assert str(info.value) == (
        f"Run mine belongs to other data or settings: it was started with fingerprint {known}, "
        f"this client sends {given}; use another run_id, or the same data and settings to "
        "resume it"
    )
    assert live_server.state.stats.total_batches == trained  # nothing of the second trained


def test_other_settings_are_another_run_too() -> None:
    X, y = _data(1)
    one = Batches(X, y, 8, 0, 1).fingerprint()
    assert Batches(X, y, 8, 0, 2).fingerprint() != one  # epochs
    assert Batches(X, y, 16, 0, 1).fingerprint() != one  # batch size
    assert Batches(X, y, 8, 1, 1).fingerprint() != one  # seed
    assert Batches(X.copy(), y.copy(), 8, 0, 1).fingerprint() == one


def test_a_second_live_connection_on_a_run_is_refused(live_server: LiveServer) -> None:
    X, y = _data(1)
    url = live_server.url.replace("http", "ws") + "/v1/train/stream"
    with connect(url) as first:
        first.send(json.dumps({"type": "hello", "protocol": PROTOCOL_VERSION, "run_id": "busy"}))
        assert json.loads(first.recv())["type"] == "welcome"
        with Client(live_server.url) as client, pytest.raises(InvalidRequestError) as info:
            fit(client, X, y, batch_size=8, run_id="busy", feedback_every=0)
    assert (info.value.status, info.value.error_type) == (409, "run_busy")
    assert str(info.value) == (
        "Run busy is in use by another connection: wait for it to end, or use another run_id"
    )
    assert live_server.state.stats.total_batches == 0


def test_the_rest_header_carries_the_fingerprint(live_server: LiveServer) -> None:
    body = {"samples": samples(2, TINY.input_dim), "run_id": "rest", "seq": 0}
    with httpx.Client(base_url=live_server.url) as http:
        first = http.post("/train_layer2", json=body, headers={"X-Corteza-Run-Fingerprint": "a"})
        other = http.post(
            "/train_layer2", json={**body, "seq": 1}, headers={"X-Corteza-Run-Fingerprint": "b"}
        )
        bad = http.post(
            "/train_layer2", json={**body, "seq": 1}, headers={"X-Corteza-Run-Fingerprint": "a b"}
        )
    assert first.status_code == 200
    assert other.status_code == 409
    assert other.json()["error_type"] == "run_conflict"
    assert bad.status_code == 422
    assert bad.json()["error"] == "a run fingerprint is 1-128 printable ASCII characters, got 'a b'"


def test_a_request_without_fingerprint_cannot_answer_for_a_held_or_owned_run(
    live_server: LiveServer,
) -> None:
    """The intruder's batch would otherwise be the answer the stream's own batch replays."""
    url = live_server.url.replace("http", "ws") + "/v1/train/stream"
    hello = {"type": "hello", "protocol": PROTOCOL_VERSION, "run_id": "owned", "fingerprint": "f"}
    intruder = {"samples": samples(2, TINY.input_dim), "run_id": "owned", "seq": 0}
    batches = Batches(*_data(1), 8, 0, 1)
    with httpx.Client(base_url=live_server.url) as http:
        with connect(url) as ws:
            ws.send(json.dumps(hello))
            assert json.loads(ws.recv())["next_seq"] == 0
            busy = http.post("/train_layer2", json=intruder)
            ws.send(batches.frame(0, run_id="owned", dtype="f32", check=None))
            ack = json.loads(ws.recv())
        run = live_server.state.runs.get("owned")
        wait_until(lambda: run is not None and not run.holders, "the stream to release its run")
        conflict = http.post("/train_layer2", json={**intruder, "seq": 1})
    assert (busy.status_code, busy.json()["error_type"]) == (409, "run_busy")
    assert busy.json()["error"] == (
        "Run owned is in use by another connection: wait for it to end, or use another run_id"
    )
    assert (ack["type"], ack["seq"], ack.get("replayed", False)) == ("ack", 0, False)
    assert ack["batch_size"] == 8  # its own batch trained, not the intruder's two samples
    assert (conflict.status_code, conflict.json()["error_type"]) == (409, "run_conflict")
    assert live_server.state.stats.total_samples == 8


def test_the_jobs_run_ids_are_the_servers(live_server: LiveServer) -> None:
    message = (
        "run_id 'job-1f2e': ids starting with 'job-' belong to the server's jobs; choose another"
    )
    body = {"samples": samples(2, TINY.input_dim), "run_id": "job-1f2e", "seq": 0}
    url = live_server.url.replace("http", "ws") + "/v1/train/stream"
    with httpx.Client(base_url=live_server.url) as http:
        rest = http.post("/train_layer2", json=body)
    with connect(url) as ws:
        ws.send(json.dumps({"type": "hello", "protocol": PROTOCOL_VERSION, "run_id": "job-1f2e"}))
        hello = json.loads(ws.recv())
    assert (rest.status_code, rest.json()["error_type"], rest.json()["error"]) == (
        422,
        "invalid_request",
        message,
    )
    assert (hello["type"], hello["error_type"], hello["error"]) == (
        "error",
        "invalid_request",
        message,
    )
    assert live_server.state.stats.total_batches == 0
