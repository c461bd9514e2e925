"""The jobs a server knows, kept on disk as one JSON file written atomically.

``<checkpoint_dir>/jobs.json`` holds every job's spec and record (state,
per-epoch scores, best epoch, a cancel asked for). Where a job resumes is in
the run book, which each checkpoint saves with the weights; the cursor in the
file is written after a checkpoint that holds it, so it is never ahead of the
newest checkpoint (a job whose run is gone with a cursor > 0 was forgotten,
not untrained). The file is written to a
temporary name, fsynced and renamed over the old one, so a crash leaves the
previous file or the new one. Without a checkpoint folder nothing survives a
restart, the jobs neither.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from pathlib import Path

from pydantic import ValidationError

from corteza.server.checkpoints.files import fsync_dir
from corteza.server.engine.runs import JOB_RUN_PREFIX
from corteza.wire.jobs import JobRecord, JobSpec

logger = logging.getLogger(__name__)

JOBS_FILE = "jobs.json"
FORMAT = 1
KEEP_DONE = 200  # finished, cancelled and failed jobs remembered; the oldest go first


def new_job(spec: JobSpec) -> JobRecord:
    job_id = secrets.token_hex(6)
    return JobRecord(
        id=job_id,
        run_id=f"{JOB_RUN_PREFIX}{job_id}",
        state="queued",
        spec=spec,
        created=time.time(),
    )


class JobBook:
    """Jobs by id, oldest first; :meth:`save` writes them to ``root / jobs.json``."""

    def __init__(self, root: Path | None) -> None:
        self.path = None if root is None else root / JOBS_FILE
        self._lock = threading.Lock()
        self._writing = threading.Lock()
        self._jobs: dict[str, JobRecord] = {}
        self.keep_done = KEEP_DONE
        self._unsavable = False  # the last save found a value JSON cannot hold (logged once)

    def load(self) -> None:
        """Read the jobs of a previous process; an unreadable file is kept aside, not trusted.

        A job whose cancel was asked for before the process ended is cancelled now.
        """
        if self.path is None or not self.path.is_file():
            return
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
            jobs = [JobRecord.model_validate(entry) for entry in document["jobs"]]
        except (OSError, ValueError, KeyError, TypeError, ValidationError) as exc:
            aside = self.path.with_name(f"{JOBS_FILE}.unreadable-{int(time.time())}")
            logger.warning("%s is unreadable (%s); moved to %s", self.path, exc, aside.name)
            os.replace(self.path, aside)
            return
        for job in jobs:
            if job.cancel_requested and not job.done:
                job.state, job.stop_reason, job.finished = "cancelled", "cancelled", time.time()
        with self._lock:
            self._jobs = {job.id: job for job in jobs}

    def add(self, job: JobRecord) -> list[JobRecord]:
        """Keep ``job`` (in memory: :meth:`save` writes it); the ended jobs forgotten for it."""
        with self._lock:
            self._jobs[job.id] = job
            done = [j for j in self._jobs.values() if j.done]
            dropped = done[: max(0, len(done) - self.keep_done)]
            for old in dropped:
                del self._jobs[old.id]
        return dropped

    def get(self, job_id: str) -> JobRecord | None:
        with self._lock:
            return self._jobs.get(job_id)

    def all(self) -> list[JobRecord]:
        with self._lock:
            return list(self._jobs.values())

    def pending(self) -> list[JobRecord]:
        """Jobs still to train, in order: one that was running first, then the queue."""
        jobs = [job for job in self.all() if not job.done]
        return sorted(jobs, key=lambda job: (job.state != "running", job.created))

    def snapshot(self) -> str:
        """Every job as the file's text."""
        with self._lock:
            document = {"format": FORMAT, "jobs": [j.model_dump() for j in self._jobs.values()]}
        return json.dumps(document, indent=1, allow_nan=False)

    def save(self) -> None:
        """Write every job atomically; a failure is logged, never raised (training goes on).

        One save at a time, each of the jobs as they stand when it begins: the last
        save holds the newest state.
        """
        if self.path is None or (not self.all() and not self.path.exists()):
            return  # no job ever: a server that trains none leaves no file
        with self._writing:
            try:
                text = self.snapshot()
            except ValueError as exc:  # a value JSON cannot hold; the file stays as it was
                if not self._unsavable:
                    logger.error("could not save the jobs to %s: %s", self.path, exc)
                self._unsavable = True
                return
            self._unsavable = False
            self._write(self.path, text)

    @staticmethod
    def _write(path: Path, text: str) -> None:
        partial = path.with_name(f"{JOBS_FILE}.partial")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with partial.open("w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.replace(partial, path)
            fsync_dir(path.parent)
        except OSError as exc:
            logger.warning("could not save the jobs to %s: %s", path, exc)
            partial.unlink(missing_ok=True)  # a full disk: the last good file stays
