"""A full disk: training goes on, the failure is loud, saves back off, the last good one stays.

The disk is a real 4 MiB tmpfs mounted by the test (root only; skipped otherwise).
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from corteza.client import Client, make_dataset
from corteza.client.training.fit import fit
from corteza.server import Settings
from corteza.server.checkpoints.store import list_checkpoints, verify_checkpoint
from corteza.server.observe.bus import Event
from corteza.server.observe.webhooks import WEBHOOK_EVENTS, slack_text
from tests.conftest import TINY, LiveServer, start_server, stop_server
from tests.helpers import samples

DISK_BYTES = 4 * 1024 * 1024


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real file system of ``DISK_BYTES`` that can be filled up."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    """Write a file until the disk is full; returns it (remove it to free the space)."""
    filler = disk / "filler"
    with filler.open("wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def train(http: httpx.Client, run_id: str, seqs: range) -> None:
    for seq in seqs:
        body = {"samples": samples(4, TINY.input_dim, seed=seq), "run_id": run_id, "seq": seq}
        response = http.post("/train_layer2", json=body)
        assert response.status_code == 200, response.text
        assert response.json()["replayed"] is False


def _settings(root: Path) -> Settings:
    return Settings(model=TINY, seed=0, checkpoint_dir=root, checkpoint_every=1, checkpoint_keep=1)


def _served(disk: Path) -> LiveServer:
    live = start_server(_settings(disk / "ckpt"))
    live.state.checkpointer.retry_first = 3600.0  # no interval retry within this test
    return live


def test_a_full_disk_never_fails_a_batch_and_is_loud(
    small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    live = _served(small_disk)
    try:
        with live.http() as http:
            train(http, "full", range(1))
            (good,) = list_checkpoints(small_disk / "ckpt")
            good_files = {p.name: p.read_bytes() for p in good.iterdir()}
            filler = fill(small_disk)
            train(http, "full", range(1, 6))  # every one answered 200, none refused
            status = http.get("/status").json()
            metrics = http.get("/metrics").text
            refused = http.post("/v1/checkpoint")
        state = live.state
        failed = [e for e in state.events.recent() if e.type == "checkpoint_failed"]
        assert [e.data["reason"] for e in failed] == ["interval", "request"]
    finally:
        stop_server(live)  # its shutdown save fails too, quietly
    assert state.stats.total_batches == 6
    assert state.runs.open("full").next_seq == 6
    # One attempt after batch 2, then the backoff: not one failed save per batch.
    assert failed[0].data["consecutive_failures"] == 1
    assert failed[0].data["reason"] == "interval"
    assert failed[0].data["last_good"] == good.name
    assert failed[0].data["retry_in_seconds"] == 600.0  # capped at RETRY_MAX
    assert "No space left on device" in failed[0].data["error"]
    health = status["checkpoints"]
    assert health["consecutive_failures"] == 1
    assert health["failures_total"] == 1
    assert health["last"] == good.name
    assert health["last_error"].startswith("OSError: [Errno 28] No space left on device")
    assert isinstance(health["last_error_at"], float)
    assert "corteza_checkpoint_failures_total 1.0" in metrics
    assert refused.status_code == 503
    assert refused.json()["error_type"] == "checkpoint_failed"
    assert refused.json()["error"].startswith(
        "Saving a checkpoint failed: OSError: [Errno 28] No space left on device"
    )
    # The last good checkpoint is untouched, and no temporary folder is left behind.
    assert list_checkpoints(small_disk / "ckpt") == [good]
    assert {p.name: p.read_bytes() for p in good.iterdir()} == good_files
    verify_checkpoint(good)
    assert sorted(p.name for p in (small_disk / "ckpt").iterdir()) == [good.name]
    warnings = [r for r in caplog.records if "Saving a checkpoint failed" in r.getMessage()]
    assert warnings and not any(r.exc_info for r in warnings)  # a full disk needs no traceback
    assert "Future exception was never retrieved" not in caplog.text
    filler.unlink()


def test_saving_works_again_once_space_is_freed_and_a_restart_resumes(small_disk: Path) -> None:
    live = _served(small_disk)
    try:
        with live.http() as http:
            train(http, "back", range(2))
            filler = fill(small_disk)
            train(http, "back", range(2, 4))
            assert http.get("/status").json()["checkpoints"]["consecutive_failures"] == 1
            filler.unlink()
            saved = http.post("/v1/checkpoint")
            assert saved.status_code == 200
            health = http.get("/status").json()["checkpoints"]
    finally:
        stop_server(live)
    assert health["consecutive_failures"] == 0
    assert health["failures_total"] == 1
    assert health["last"] == saved.json()["checkpoint"]
    again = start_server(_settings(small_disk / "ckpt"))
    try:
        assert again.state.runs.open("back").next_seq == 4
        assert again.state.stats.total_batches == 4
    finally:
        stop_server(again)


def test_a_vanished_checkpoint_folder_is_a_failure_not_a_crash(tmp_path: Path) -> None:
    """A Drive that goes away: the folder's parent is replaced by a file."""
    parent = tmp_path / "drive"
    live = start_server(_settings(parent / "ckpt"))
    live.state.checkpointer.retry_first = 3600.0
    try:
        with live.http() as http:
            train(http, "gone", range(1))
            subprocess.run(["rm", "-rf", str(parent)], check=True)
            parent.write_text("not a folder")
            train(http, "gone", range(1, 4))
            health = http.get("/status").json()["checkpoints"]
    finally:
        stop_server(live)
    assert health["consecutive_failures"] == 1
    assert health["last_error"].startswith(("FileExistsError", "NotADirectoryError"))


def test_a_failed_save_is_a_webhook_event_with_a_human_line() -> None:
    event = Event(
        1,
        "checkpoint_failed",
        0.0,
        {
            "step": 12,
            "reason": "interval",
            "error": "OSError: [Errno 28] No space left on device",
            "consecutive_failures": 3,
            "retry_in_seconds": 20.0,
            "last_good": None,
        },
    )
    assert "checkpoint_failed" in WEBHOOK_EVENTS
    assert slack_text(event) == (
        "corteza: checkpoint failed at step 12 (3 in a row; training goes on, nothing newer is "
        "durable): OSError: [Errno 28] No space left on device"
    )


def test_the_client_warns_once_when_checkpoints_are_failing(small_disk: Path) -> None:
    live = _served(small_disk)
    events: list[tuple[str, str]] = []
    data = make_dataset(24, input_dim=TINY.input_dim, seed=1)
    try:
        with live.http() as http:
            train(http, "first", range(1))
        filler = fill(small_disk)
        with Client(live.url) as client:
            summary = fit(
                client,
                data.X,
                data.y,
                batch_size=8,
                feedback_every=0,
                on_event=lambda kind, message: events.append((kind, message)),
            )
        filler.unlink()
    finally:
        stop_server(live)
    assert summary.batches == 3
    warnings = [message for kind, message in events if kind == "warning"]
    assert len(warnings) == 1
    assert warnings[0].startswith(
        "the server's checkpoints are failing (1 in a row: OSError: [Errno 28] No space left "
        "on device"
    )
    assert " is on disk yet" in warnings[0]
