"""Exactly-once bookkeeping: every batch is ``(run_id, seq)``.

``seq == next``: applied. ``seq < next``: already applied; the stored answer
is replayed, nothing trains. ``seq > next``: refused with ``next``. The
book is saved inside every checkpoint, atomically with the weights, so after
a restart the client resumes from the ``next_seq`` the weights really hold.
Only the training worker's thread records; the lock keeps readers whole.

A run belongs to its data and settings: a client may send a fingerprint of
them (opaque here: printable ASCII, at most 128 characters). The first one a
run trains with (or a stream's hello brings) is kept; another one on the same
run id, or none on a run that has one, is :class:`RunConflictError` (409
``run_conflict``), so a reused run id never resumes, and silently skips,
someone else's batches. A run without a fingerprint takes batches with or
without one. One live connection holds a run at a time; a second, or a
request on a held run, is :class:`RunBusyError` (409 ``run_busy``).

The book is bounded: each run keeps its last ``STORED_ANSWERS`` answers (the
book at most ``ANSWERS_KEPT``, taken first from the longest idle runs: an
answer too old to be kept replays as ``{"seq", "run_id", "replayed"}``), and
beyond the runs in use (a live stream holds its run) it keeps at most
``keep`` others, none idle longer than ``ttl`` seconds. Runs that trained
nothing go first (a hello with a null run id opens one), then the longest
idle. A forgotten run that comes back starts again at seq 0.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
FINGERPRINT = re.compile(r"[\x21-\x7e]{1,128}")  # printable ASCII, no spaces
STORED_ANSWERS = 256  # answers kept per run for replays
ANSWERS_KEPT = 1024  # answers kept in the whole book (~3.3 KB each in state.json)
RUNS_KEEP = 256  # runs kept besides those in use
RUNS_TTL = 7 * 24 * 3600.0  # seconds a run not in use is kept after its last batch


class OutOfOrderError(Exception):
    """A batch from the future: the client must resume at ``next_seq``."""

    def __init__(self, run_id: str, seq: int, next_seq: int) -> None:
        super().__init__(f"Out of order: run {run_id} expects seq {next_seq}, got {seq}")
        self.run_id = run_id
        self.seq = seq
        self.next_seq = next_seq


class RunConflictError(Exception):
    """The run id is known with another fingerprint: other data or settings."""

    def __init__(self, run_id: str, known: str, given: str | None) -> None:
        sends = "none" if given is None else given
        super().__init__(
            f"Run {run_id} belongs to other data or settings: it was started with fingerprint "
            f"{known}, this client sends {sends}; use another run_id, or the same data and "
            "settings to resume it"
        )
        self.run_id = run_id
        self.known = known
        self.given = given


class RunBusyError(Exception):
    """Another live connection is training the run."""

    def __init__(self, run_id: str) -> None:
        super().__init__(
            f"Run {run_id} is in use by another connection: wait for it to end, or use "
            "another run_id"
        )
        self.run_id = run_id


def check_fingerprint(fingerprint: str) -> str:
    if not FINGERPRINT.fullmatch(fingerprint):
        raise ValueError(
            f"a run fingerprint is 1-128 printable ASCII characters, got {fingerprint[:40]!r}"
        )
    return fingerprint


def new_run_id() -> str:
    return secrets.token_hex(8)


def check_run_id(run_id: str) -> str:
    if not RUN_ID.fullmatch(run_id):
        raise ValueError(f"run_id must be 1-64 letters, digits, '-' or '_', got {run_id!r}")
    return run_id


JOB_RUN_PREFIX = "job-"  # the runs of the server's own jobs


def check_client_run_id(run_id: str) -> str:
    """:func:`check_run_id` for a client's run: the jobs' prefix is the server's."""
    if check_run_id(run_id).startswith(JOB_RUN_PREFIX):
        raise ValueError(
            f"run_id {run_id!r}: ids starting with {JOB_RUN_PREFIX!r} belong to the server's "
            "jobs; choose another"
        )
    return run_id


@dataclass
class Run:
    """One run: seqs ``0 .. next_seq - 1`` are in the weights, each exactly once."""

    run_id: str
    next_seq: int = 0
    answers: OrderedDict[int, dict[str, Any]] = field(default_factory=OrderedDict)
    touched: float = field(default_factory=time.time)  # unix seconds of its last batch or use
    fingerprint: str | None = None  # of its data and settings, as the client said
    holders: int = 0  # live connections using it (not saved)

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "next_seq": self.next_seq,
            "touched": self.touched,
            "fingerprint": self.fingerprint,
            "answers": [[seq, answer] for seq, answer in self.answers.items()],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Run:
        """What :meth:`to_json` wrote; ValueError or TypeError for anything else.

        ``applied`` (a list every seq, written before the book was bounded) is ignored.
        """
        pairs = [(seq, answer) for seq, answer in data.get("answers", [])]
        seqs = [data["next_seq"], *(seq for seq, _ in pairs)]
        if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seqs):
            raise ValueError(f"run {data['run_id']!r:.70}: seqs must be non-negative integers")
        if not all(isinstance(answer, dict) for _, answer in pairs):
            raise ValueError(f"run {data['run_id']!r:.70}: stored answers must be objects")
        json.dumps(pairs, allow_nan=False)  # replayed as they are: they must be strict JSON
        touched = data.get("touched", time.time())
        if isinstance(touched, bool) or not isinstance(touched, (int, float)):
            raise ValueError(f"run {data['run_id']!r:.70}: touched must be a number")
        if not math.isfinite(touched):
            raise ValueError(f"run {data['run_id']!r:.70}: touched must be finite")
        pairs = pairs[-STORED_ANSWERS:]
        run_id = check_run_id(str(data["run_id"]))
        fingerprint = data.get("fingerprint")
        if fingerprint is not None:
            check_fingerprint(fingerprint)
        return cls(run_id, data["next_seq"], OrderedDict(pairs), float(touched), fingerprint)


class RunBook:
    """The runs this model has trained, by id: those in use and the last ``keep`` others.

    ``ttl`` (seconds) forgets a run not in use that long after its last batch.
    """

    def __init__(self, keep: int = RUNS_KEEP, ttl: float = RUNS_TTL) -> None:
        if keep < 0 or ttl <= 0:
            raise ValueError(f"keep must be >= 0 and ttl > 0, got {keep} and {ttl}")
        self.keep = keep
        self.ttl = ttl
        self._lock = threading.Lock()
        self._runs: dict[str, Run] = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._runs)

    def open(self, run_id: str | None) -> Run:
        """A known run, or a new one (a fresh id when none is given)."""
        run_id = new_run_id() if run_id is None else check_run_id(run_id)
        with self._lock:
            return self._get_or_add(run_id)

    def _get_or_add(self, run_id: str) -> Run:
        """The run ``run_id`` (checked), added when unknown (lock held)."""
        run = self._runs.get(run_id)
        if run is None:
            run = self._runs[run_id] = Run(run_id)
            self._prune(spare=run_id)
        return run

    def hold(self, run_id: str | None, fingerprint: str | None = None) -> Run:
        """:meth:`open` for a live connection; :meth:`release` when it ends.

        Raises :class:`RunBusyError` while another connection holds the run and
        :class:`RunConflictError` for another ``fingerprint`` (or none on a run
        that has one); a run without one, or one that has trained nothing, takes
        it. Nothing changes when refused.
        """
        if fingerprint is not None:
            check_fingerprint(fingerprint)
        run_id = new_run_id() if run_id is None else check_run_id(run_id)
        with self._lock:
            run = self._get_or_add(run_id)
            self._check(run, fingerprint)
            run.fingerprint = fingerprint if run.next_seq == 0 else run.fingerprint or fingerprint
            run.holders += 1
            run.touched = time.time()
        return run

    @staticmethod
    def _check(run: Run, fingerprint: str | None) -> None:
        """Refuse a caller other than the run's connection or data (lock held).

        A run that has trained nothing (a hello, then nothing) belongs to nobody yet.
        """
        if run.holders:
            raise RunBusyError(run.run_id)
        if run.next_seq and run.fingerprint is not None and fingerprint != run.fingerprint:
            raise RunConflictError(run.run_id, run.fingerprint, fingerprint)

    def release(self, run_id: str) -> None:
        """A live connection on ``run_id`` ended: the run may be forgotten from now on."""
        with self._lock:
            run = self._runs.get(run_id)
            if run is not None and run.holders:
                run.holders -= 1
                run.touched = time.time()
            self._prune()

    def _prune(self, spare: str | None = None) -> None:
        """Forget runs not in use beyond ``keep`` or idle beyond ``ttl`` (lock held)."""
        now = time.time()
        idle = [run for run in self._runs.values() if not run.holders and run.run_id != spare]
        if len(idle) <= self.keep and all(now - run.touched <= self.ttl for run in idle):
            return
        # Untrained runs hold nothing worth keeping: they go first, then the longest idle.
        idle.sort(key=lambda run: (run.next_seq > 0, run.touched), reverse=True)
        for position, run in enumerate(idle):
            if position >= self.keep or now - run.touched > self.ttl:
                del self._runs[run.run_id]

    def get(self, run_id: str) -> Run | None:
        with self._lock:
            return self._runs.get(run_id)

    def decide(
        self, run_id: str, seq: int, fingerprint: str | None = None, *, held: bool = False
    ) -> dict[str, Any] | None:
        """The stored answer to replay, or None to apply; raises when ``seq`` is ahead
        (:class:`OutOfOrderError`), the run is another's (:class:`RunConflictError`),
        or a live connection holds it (:class:`RunBusyError`).

        ``held``: the caller is the connection holding the run (its hello was
        checked). Nothing is recorded here: :meth:`record` keeps the fingerprint
        with the first batch trained. A seq older than the stored answers
        replays ``{"seq", "run_id"}`` only.
        """
        run_id = check_run_id(run_id)
        with self._lock:
            run = self._get_or_add(run_id)
            if not held:
                self._check(run, fingerprint)
            run.touched = time.time()
            if seq == run.next_seq:
                return None
            if seq > run.next_seq:
                raise OutOfOrderError(run_id, seq, run.next_seq)
            return run.answers.get(seq, {"seq": seq, "run_id": run_id})

    def record(
        self, run_id: str, seq: int, answer: dict[str, Any], fingerprint: str | None = None
    ) -> None:
        """Mark ``seq`` applied (the caller trained it) and keep its answer.

        A run without a fingerprint takes ``fingerprint`` (already checked by
        :meth:`decide`); its first batch sets it, unless the batch is a holder's
        own (``None``: the fingerprint its hello brought stays).
        """
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:  # forgotten by another thread's prune since decide(): still trained
                run = self._runs[run_id] = Run(check_run_id(run_id), next_seq=seq)
            if seq != run.next_seq:  # only the worker records, right after decide()
                raise OutOfOrderError(run_id, seq, run.next_seq)
            if fingerprint is not None and (run.fingerprint is None or seq == 0):
                run.fingerprint = check_fingerprint(fingerprint)
            elif seq == 0 and not run.holders:  # a hello's, left by a stream that trained nothing
                run.fingerprint = None
            run.next_seq += 1
            run.touched = time.time()
            run.answers[seq] = answer
            while len(run.answers) > STORED_ANSWERS:
                run.answers.popitem(last=False)
            self._trim_answers()

    def _trim_answers(self) -> None:
        """Keep at most ``ANSWERS_KEPT`` answers, the longest idle runs' first to go."""
        excess = sum(len(run.answers) for run in self._runs.values()) - ANSWERS_KEPT
        if excess <= 0:
            return
        for run in sorted(self._runs.values(), key=lambda run: (run.holders > 0, run.touched)):
            while run.answers and excess > 0:
                run.answers.popitem(last=False)
                excess -= 1
            if excess <= 0:
                return

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
            held = [run for run in self._runs.values() if run.holders]
            for old in held:  # a live connection keeps holding its run, and its fingerprint
                kept = runs.setdefault(old.run_id, Run(old.run_id, fingerprint=old.fingerprint))
                kept.holders = old.holders
            self._runs = runs
            self._prune()
