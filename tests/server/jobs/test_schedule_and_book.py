"""The learning-rate schedule, the sample count of a cursor, the jobs file on disk, bounds."""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import pytest
from pydantic import ValidationError

from corteza.server.jobs.book import JOBS_FILE, JobBook, new_job
from corteza.server.jobs.schedule import learning_rate
from corteza.server.jobs.training import trim_epochs
from corteza.wire.jobs import EpochScore, JobSpec, batches_per_epoch, samples_before


def test_cosine_warms_up_linearly_then_decays_to_a_tenth() -> None:
    rates = [learning_rate(seq, 100, 1.0, "cosine", warmup=0.1) for seq in range(100)]
    assert rates[:10] == pytest.approx([(k + 1) / 10 for k in range(10)])
    assert rates[10] == pytest.approx(1.0)
    assert rates[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in itertools.pairwise(rates[10:]))
    assert [learning_rate(seq, 100, 1.0, "none", warmup=0.1) for seq in (0, 50, 99)] == [1.0] * 3
    assert learning_rate(0, 1, 0.5, "cosine", warmup=0.1) == 0.5  # one batch: no schedule


def test_samples_before_counts_the_short_last_batch_of_each_epoch() -> None:
    assert batches_per_epoch(10, 4) == 3  # 4 + 4 + 2
    assert [samples_before(seq, 10, 4) for seq in range(7)] == [0, 4, 8, 10, 14, 18, 20]


def test_the_jobs_file_round_trips_and_an_unreadable_one_is_moved_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    book = JobBook(tmp_path)
    job = new_job(JobSpec(dataset="a" * 64, epochs=3))
    book.add(job)
    book.save()
    again = JobBook(tmp_path)
    again.load()
    assert again.all() == [job]
    assert again.pending() == [job]
    (tmp_path / JOBS_FILE).write_text("{not json", encoding="utf-8")
    broken = JobBook(tmp_path)
    with caplog.at_level(logging.WARNING):
        broken.load()
    assert broken.all() == []
    assert not (tmp_path / JOBS_FILE).exists()
    assert [p.name.split("-")[0] for p in tmp_path.iterdir()] == [f"{JOBS_FILE}.unreadable"]
    assert "is unreadable" in caplog.text


def test_a_cancel_saved_before_a_restart_cancels_the_job_on_load(tmp_path: Path) -> None:
    book = JobBook(tmp_path)
    job = new_job(JobSpec(dataset="a" * 64))
    job.state, job.cursor, job.cancel_requested = "running", 7, True
    book.add(job)
    book.save()
    again = JobBook(tmp_path)
    again.load()
    [loaded] = again.all()
    assert (loaded.state, loaded.stop_reason, loaded.cursor) == ("cancelled", "cancelled", 7)
    assert loaded.finished is not None
    assert again.pending() == []


def test_a_record_json_cannot_hold_is_logged_once_and_the_file_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    book = JobBook(tmp_path)
    good = new_job(JobSpec(dataset="a" * 64))
    book.add(good)
    book.save()
    bad = new_job(JobSpec(dataset="b" * 64))
    bad.last_loss = float("inf")
    book.add(bad)
    with caplog.at_level(logging.ERROR):
        book.save()
        book.save()
    assert caplog.text.count("could not save the jobs") == 1
    again = JobBook(tmp_path)
    again.load()
    assert again.all() == [good]  # the last good file


def test_an_infinite_or_nan_bound_is_refused() -> None:
    for value in (float("inf"), float("nan")):
        with pytest.raises(ValidationError, match="Input should be a finite number"):
            JobSpec(dataset="a" * 64, until_loss=value)


def test_ended_jobs_beyond_keep_done_are_returned_when_dropped(tmp_path: Path) -> None:
    book = JobBook(tmp_path)
    book.keep_done = 1
    first, second = new_job(JobSpec(dataset="a" * 64)), new_job(JobSpec(dataset="a" * 64))
    assert book.add(first) == []
    first.state = "finished"
    assert book.add(second) == []
    second.state = "failed"
    assert book.add(new_job(JobSpec(dataset="a" * 64))) == [first]
    assert [job.id for job in book.all() if job.done] == [second.id]


def test_epoch_scores_keep_the_last_ones_and_the_best() -> None:
    scored = [EpochScore(epoch=e) for e in range(6)]
    kept, dropped = trim_epochs(scored, best=1, keep=3)
    assert [e.epoch for e in kept] == [1, 3, 4, 5]
    assert dropped == 2
    kept, dropped = trim_epochs(scored, best=4, keep=3)
    assert ([e.epoch for e in kept], dropped) == ([3, 4, 5], 3)
    assert trim_epochs(scored[:2], best=None, keep=3) == (scored[:2], 0)
