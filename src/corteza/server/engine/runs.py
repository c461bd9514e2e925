"""Exactly-once bookkeeping: every batch is ``(run_id, seq)``.

``seq == next``: applied. ``seq < next``: already applied; the stored answer
is replayed, nothing trains. ``seq > next``: refused with ``next``. The
book is saved inside every checkpoint, atomically with the weights, so after
a restart the client resumes from the ``next_seq`` the weights really hold.
Only the training worker's thread changes it; the lock keeps readers whole.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
STORED_ANSWERS = 256  # answers kept per run for replays


class OutOfOrderError(Exception):
    """A batch from the future: the client must resume at ``next_seq``."""

    def __init__(self, run_id: str, seq: int, next_seq: int) -> None:
        super().__init__(f"Out of order: run {run_id} expects seq {next_seq}, got {seq}")
        self.run_id = run_id
        self.seq = seq
        self.next_seq = next_seq


def new_run_id() -> str:
    return secrets.token_hex(8)


def check_run_id(run_id: str) -> str:
    if not RUN_ID.fullmatch(run_id):
        raise ValueError(f"run_id must be 1-64 letters, digits, '-' or '_', got {run_id!r}")
    return run_id


@dataclass
class Run:
    run_id: str
    next_seq: int = 0
    applied: list[int] = field(default_factory=list)  # every seq trained, in order
    answers: OrderedDict[int, dict[str, Any]] = field(default_factory=OrderedDict)

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "next_seq": self.next_seq,
            "applied": self.applied,
            "answers": [[seq, answer] for seq, answer in self.answers.items()],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Run:
        """What :meth:`to_json` wrote; ValueError or TypeError for anything else."""
        pairs = [(seq, answer) for seq, answer in data.get("answers", [])]
        applied = list(data.get("applied", []))
        seqs = [data["next_seq"], *applied, *(seq for seq, _ in pairs)]
        if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seqs):
            raise ValueError(f"run {data['run_id']!r:.70}: seqs must be non-negative integers")
        if not all(isinstance(answer, dict) for _, answer in pairs):
            raise ValueError(f"run {data['run_id']!r:.70}: stored answers must be objects")
        json.dumps(pairs, allow_nan=False)  # replayed as they are: they must be strict JSON
        return cls(check_run_id(str(data["run_id"])), data["next_seq"], applied, OrderedDict(pairs))


class RunBook:
    """The runs this model has trained, by id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[str, Run] = {}

    def open(self, run_id: str | None) -> Run:
        """A known run, or a new one (a fresh id when none is given)."""
        run_id = new_run_id() if run_id is None else check_run_id(run_id)
        with self._lock:
            return self._runs.setdefault(run_id, Run(run_id))

    def get(self, run_id: str) -> Run | None:
        with self._lock:
            return self._runs.get(run_id)

    def decide(self, run_id: str, seq: int) -> dict[str, Any] | None:
        """The stored answer to replay, or None to apply; raises when ``seq`` is ahead.

        A seq older than the stored answers replays ``{"replayed": True}`` only.
        """
        run = self.open(run_id)
        with self._lock:
            if seq == run.next_seq:
                return None
            if seq > run.next_seq:
                raise OutOfOrderError(run_id, seq, run.next_seq)
            return run.answers.get(seq, {"seq": seq, "run_id": run_id})

    def record(self, run_id: str, seq: int, answer: dict[str, Any]) -> None:
        """Mark ``seq`` applied (the caller trained it) and keep its answer."""
        run = self.open(run_id)
        with self._lock:
            if seq != run.next_seq:  # only the worker records, right after decide()
                raise OutOfOrderError(run_id, seq, run.next_seq)
            run.next_seq += 1
            run.applied.append(seq)
            run.answers[seq] = answer
            while len(run.answers) > STORED_ANSWERS:
                run.answers.popitem(last=False)

    def next_seqs(self) -> dict[str, int]:
        """``run_id -> next_seq`` of every run, without serialising their answers."""
        with self._lock:
            return {run_id: run.next_seq for run_id, run in self._runs.items()}

    def to_json(self) -> list[dict[str, Any]]:
        with self._lock:
            return [run.to_json() for run in self._runs.values()]

    def load_json(self, data: list[dict[str, Any]]) -> None:
        runs = {run.run_id: run for run in map(Run.from_json, data)}
        with self._lock:
            self._runs = runs
