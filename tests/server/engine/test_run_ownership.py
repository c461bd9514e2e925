"""A run belongs to its data and settings, and to one live connection at a time."""

from __future__ import annotations

import pytest

from corteza.server.engine.runs import (
    OutOfOrderError,
    Run,
    RunBook,
    RunBusyError,
    RunConflictError,
)


def test_another_fingerprint_on_a_known_run_is_a_conflict_naming_both() -> None:
    book = RunBook()
    book.record("exp", 0, {"seq": 0}, "data:aaaa/epochs:2")
    with pytest.raises(RunConflictError) as info:
        book.decide("exp", 0, "data:bbbb/epochs:2")
    assert str(info.value) == (
        "Run exp belongs to other data or settings: it was started with fingerprint "
        "data:aaaa/epochs:2, this client sends data:bbbb/epochs:2; use another run_id, or the "
        "same data and settings to resume it"
    )
    assert book.decide("exp", 1, "data:aaaa/epochs:2") is None  # the same one resumes
    with pytest.raises(RunConflictError) as info:
        book.decide("exp", 1)  # none, on a run that has one
    assert "started with fingerprint data:aaaa/epochs:2, this client sends none;" in str(info.value)


def test_the_seed_client_without_a_fingerprint_trains_a_run_without_one() -> None:
    book = RunBook()
    assert book.decide("seed", 0) is None
    book.record("seed", 0, {"seq": 0})
    assert book.decide("seed", 1) is None
    assert book.get("seed").fingerprint is None  # type: ignore[union-attr]


def test_a_refused_request_records_no_fingerprint() -> None:
    book = RunBook()
    with pytest.raises(OutOfOrderError):
        book.decide("fresh", 3, "intruder")
    assert book.decide("fresh", 0, "owner") is None  # the owner is not locked out
    book.record("fresh", 0, {"seq": 0}, "owner")
    with pytest.raises(RunConflictError):
        book.decide("fresh", 1, "intruder")


def test_a_run_held_by_a_stream_refuses_other_requests_but_not_its_own() -> None:
    book = RunBook()
    book.hold("live", "f")
    for fingerprint in ("f", None, "g"):
        with pytest.raises(RunBusyError):
            book.decide("live", 0, fingerprint)
    assert book.decide("live", 0, held=True) is None  # the holding stream's own batch
    book.release("live")
    assert book.decide("live", 0, "f") is None


def test_a_run_without_fingerprint_takes_the_first_one_given() -> None:
    book = RunBook()
    assert book.decide("old", 0) is None
    book.record("old", 0, {"seq": 0})
    book.record("old", 1, {"seq": 1}, "f1")
    with pytest.raises(RunConflictError):
        book.decide("old", 2, "f2")


def test_the_fingerprint_is_saved_with_the_run() -> None:
    book = RunBook()
    book.record("kept", 0, {"seq": 0}, "f1")
    again = RunBook()
    again.load_json(book.to_json())
    with pytest.raises(RunConflictError):
        again.hold("kept", "f2")
    with pytest.raises(ValueError, match="a run fingerprint is 1-128 printable ASCII"):
        Run.from_json({"run_id": "x", "next_seq": 0, "fingerprint": "has space"})


def test_a_second_live_connection_is_refused_until_the_first_ends() -> None:
    book = RunBook()
    book.hold("busy", "f")
    with pytest.raises(RunBusyError) as info:
        book.hold("busy", "f")
    assert str(info.value) == (
        "Run busy is in use by another connection: wait for it to end, or use another run_id"
    )
    book.release("busy")
    assert book.hold("busy", "f").holders == 1


def test_a_refused_hello_takes_no_fingerprint() -> None:
    book = RunBook()
    book.hold("r")  # a run without a fingerprint, held
    with pytest.raises(RunBusyError):
        book.hold("r", "intruder")
    book.release("r")
    assert book.hold("r", "owner").fingerprint == "owner"


def test_a_run_that_trained_nothing_belongs_to_nobody_yet() -> None:
    book = RunBook()
    book.hold("fresh", "first-try")  # a client that crashed before its first batch
    book.release("fresh")
    assert book.hold("fresh", "fixed-data").fingerprint == "fixed-data"
    book.release("fresh")
    assert book.decide("fresh", 0, "over-rest") is None  # or another client, over REST
    book.record("fresh", 0, {"seq": 0}, "over-rest")
    with pytest.raises(RunConflictError):  # trained now: it has an owner
        book.hold("fresh", "fixed-data")
    book.hold("seed", "a-hello")
    book.release("seed")
    book.record("seed", 0, {"seq": 0})  # the seed's client, no fingerprint, trains it first
    assert book.decide("seed", 1) is None


def test_a_checkpoint_loaded_under_a_live_stream_keeps_its_fingerprint() -> None:
    book = RunBook()
    book.hold("live", "f")
    book.load_json([])  # a pushed checkpoint that never saw the run
    book.record("live", 0, {"seq": 0})  # the stream's own batch
    book.release("live")
    with pytest.raises(RunConflictError):
        book.decide("live", 1)
