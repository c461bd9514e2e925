"""A run belongs to its data and settings, and to one live connection at a time."""

from __future__ import annotations

import pytest

from corteza.server.engine.runs import Run, RunBook, RunBusyError, RunConflictError


def test_another_fingerprint_on_a_known_run_is_a_conflict_naming_both() -> None:
    book = RunBook()
    book.open("exp", "data:aaaa/epochs:2")
    with pytest.raises(RunConflictError) as info:
        book.decide("exp", 0, "data:bbbb/epochs:2")
    assert str(info.value) == (
        "Run exp belongs to other data or settings: it was started with fingerprint "
        "data:aaaa/epochs:2, this client sends data:bbbb/epochs:2; use another run_id, or the "
        "same data and settings to resume it"
    )
    assert book.decide("exp", 0, "data:aaaa/epochs:2") is None  # the same one resumes
    assert book.decide("exp", 0) is None  # none (the seed's client) is accepted


def test_a_run_without_fingerprint_takes_the_first_one_given() -> None:
    book = RunBook()
    assert book.decide("old", 0) is None
    book.record("old", 0, {"seq": 0})
    book.open("old", "f1")
    with pytest.raises(RunConflictError):
        book.open("old", "f2")


def test_the_fingerprint_is_saved_with_the_run() -> None:
    book = RunBook()
    book.open("kept", "f1")
    again = RunBook()
    again.load_json(book.to_json())
    with pytest.raises(RunConflictError):
        again.open("kept", "f2")
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
