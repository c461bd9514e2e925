"""The learning-rate schedule, the sample count of a cursor, and the jobs file on disk."""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import pytest

from corteza.server.jobs.book import JOBS_FILE, JobBook, new_job
from corteza.server.jobs.schedule import learning_rate
from corteza.wire.jobs import JobSpec, batches_per_epoch, samples_before


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
