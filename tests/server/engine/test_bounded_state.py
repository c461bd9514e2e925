"""State that grows per request stays bounded: the run book, stored answers, followed runs."""

from __future__ import annotations

import json
import time

import httpx
import numpy as np
from websockets.sync.client import connect

from corteza.server.engine.runs import ANSWERS_KEPT, STORED_ANSWERS, Run, RunBook
from corteza.server.engine.trainer import TrainResult
from corteza.server.observe.bus import EventBus
from corteza.server.observe.events import RUNS_FOLLOWED, TrainingEvents
from corteza.wire import PROTOCOL_VERSION
from tests.conftest import LiveServer


def _trained(book: RunBook, run_id: str, batches: int) -> None:
    held = bool((run := book.get(run_id)) and run.holders)
    for seq in range(batches):
        assert book.decide(run_id, seq, held=held) is None
        book.record(run_id, seq, {"seq": seq})


def test_a_run_keeps_no_list_of_every_seq() -> None:
    book = RunBook()
    _trained(book, "long", STORED_ANSWERS + 50)
    (saved,) = book.to_json()
    assert set(saved) == {"run_id", "next_seq", "touched", "fingerprint", "answers"}
    assert saved["next_seq"] == STORED_ANSWERS + 50
    assert len(saved["answers"]) == STORED_ANSWERS


def test_a_run_saved_with_applied_loads_without_it() -> None:
    run = Run.from_json({"run_id": "old", "next_seq": 3, "applied": [0, 1, 2], "answers": []})
    assert (run.run_id, run.next_seq) == ("old", 3)


def test_untrained_runs_go_first_then_the_longest_idle() -> None:
    book = RunBook(keep=3)
    _trained(book, "a", 1)
    _trained(book, "b", 2)
    for _ in range(50):  # hellos with a null run id
        book.open(None)
    assert {"a", "b"} <= set(book.next_seqs())
    assert len(book) == 4  # 3 kept, and the newest spared while it is being opened
    for run_id in "cde":
        _trained(book, run_id, 1)
    assert set(book.next_seqs()) == {"b", "c", "d", "e"}  # "a": the longest idle trained run


def test_runs_in_use_are_never_forgotten_and_idle_ones_expire() -> None:
    book = RunBook(keep=0, ttl=3600)
    held = book.hold("live")
    _trained(book, "live", 2)
    book.open("other")  # keep=0: nothing idle survives
    assert "live" in book.next_seqs()
    book.release("live")
    assert "live" not in book.next_seqs()
    assert held.next_seq == 2

    ttl = RunBook(keep=10, ttl=60)
    _trained(ttl, "old", 1)
    ttl.get("old").touched = time.time() - 61  # type: ignore[union-attr]
    ttl.open("new")
    assert "old" not in ttl.next_seqs()


def test_a_run_forgotten_between_decide_and_record_is_still_recorded() -> None:
    book = RunBook(keep=0)
    assert book.decide("x", 0) is None
    book.open("y")  # prunes x, which holds nothing yet
    book.record("x", 0, {"seq": 0})
    assert book.get("x") is not None and book.get("x").next_seq == 1  # type: ignore[union-attr]


def test_hellos_with_a_null_run_id_do_not_grow_the_book(live_server: LiveServer) -> None:
    live_server.state.runs.keep = 8
    url = live_server.url.replace("http", "ws") + "/v1/train/stream"
    for _ in range(40):
        with connect(url) as ws:
            ws.send(json.dumps({"type": "hello", "protocol": PROTOCOL_VERSION, "run_id": None}))
            assert json.loads(ws.recv())["type"] == "welcome"
    assert len(live_server.state.runs) <= 9
    with httpx.Client(base_url=live_server.url) as http:
        assert http.get("/status").json()["runs"] <= 9


def _result(step: int) -> TrainResult:
    return TrainResult(
        batch_size=1,
        epochs=1,
        losses=[0.5],
        probabilities=np.array([0.5], dtype=np.float32),
        dendrites=[0.0],
        coherence=[0.0],
        capa_means=(0.0, 0.0, 0.0),
        step=step,
        seconds=0.01,
    )


def test_the_events_follow_a_bounded_number_of_runs() -> None:
    bus = EventBus(first_id=1)
    events = TrainingEvents(bus, margin=0.01, loss_below=None, stall_seconds=600)
    for step in range(RUNS_FOLLOWED + 10):
        events.batch_trained(_result(step), {"run_id": f"r{step}", "seq": 0})
    assert len(events._runs) == RUNS_FOLLOWED
    assert events.run_closed(f"r{RUNS_FOLLOWED + 9}") is True
    assert events.run_closed("r0") is False  # the oldest was let go


def test_the_whole_book_keeps_a_bounded_number_of_answers() -> None:
    book = RunBook(keep=1000)
    runs = ANSWERS_KEPT // STORED_ANSWERS + 4
    for number in range(runs):
        _trained(book, f"r{number}", STORED_ANSWERS)
    saved = book.to_json()
    assert sum(len(run["answers"]) for run in saved) == ANSWERS_KEPT
    assert len(saved[-1]["answers"]) == STORED_ANSWERS  # the latest run keeps all of its own
    assert saved[0]["answers"] == []  # the longest idle gave its answers up first
    assert book.decide("r0", 5) == {"seq": 5, "run_id": "r0"}  # replayed without a stored answer
