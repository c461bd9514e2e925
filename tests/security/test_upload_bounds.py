"""Checkpoint uploads are bounded: open count, total bytes, age, JSON depth, offsets.

The bookkeeping is tested on real folders with a clock the test moves; the
routes against the live token-protected server.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import httpx
import pytest

from corteza.server.checkpoints.uploads import (
    MAX_CHUNK,
    CheckpointUploads,
    UploadError,
    upload_budget,
)
from tests.conftest import LiveServer
from tests.security.uploads import saved_checkpoint, with_manifest


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_without_checkpoints_uploads_go_to_a_private_folder_removed_at_close() -> None:
    uploads = CheckpointUploads(None, 1000)
    upload_id = uploads.start()["upload_id"]
    base = uploads.base
    assert base.parent == Path(tempfile.gettempdir())
    assert base.name.startswith("corteza-uploads-") and base.name != "corteza-up"
    assert stat.S_IMODE(os.stat(base).st_mode) == 0o700
    assert (base / upload_id).is_dir()
    uploads.close()
    assert not base.exists()


def test_open_uploads_are_capped_and_idle_ones_expire(tmp_path: Path) -> None:
    clock = Clock()
    uploads = CheckpointUploads(tmp_path, 1000, max_open=2, ttl_s=60, clock=clock)
    first = uploads.start()["upload_id"]
    clock.now = 30
    second = uploads.start()["upload_id"]
    with pytest.raises(UploadError) as refused:
        uploads.start()
    assert refused.value.status == 429
    assert refused.value.message == (
        "Too many checkpoint uploads in progress (2): commit one, or wait; "
        "an upload idle for 60 s is dropped"
    )
    clock.now = 61  # the first is idle for 61 s, the second for 31 s
    third = uploads.start()["upload_id"]
    assert sorted(p.name for p in (tmp_path / ".uploads").iterdir()) == sorted([second, third])
    with pytest.raises(UploadError) as gone:
        uploads.folder(first)
    assert (gone.value.status, gone.value.message) == (404, f"No upload {first!r}")


def test_a_request_keeps_an_upload_alive(tmp_path: Path) -> None:
    clock = Clock()
    uploads = CheckpointUploads(tmp_path, 1000, ttl_s=60, clock=clock)
    upload_id = uploads.start()["upload_id"]
    for now in (50, 100, 150):
        clock.now = now
        uploads.append(upload_id, "state.json", 0 if now == 50 else now // 50 - 1, b"x")
    assert uploads.open_count == 1


def test_leftovers_of_a_previous_server_are_removed(tmp_path: Path) -> None:
    leftover = tmp_path / ".uploads" / ("a" * 32)
    leftover.mkdir(parents=True)
    (leftover / "model.safetensors").write_bytes(b"x" * 100)
    CheckpointUploads(tmp_path, 1000).start()
    assert not leftover.exists()


def test_the_total_of_an_upload_is_capped(tmp_path: Path) -> None:
    uploads = CheckpointUploads(tmp_path, 100)
    upload_id = uploads.start()["upload_id"]
    assert uploads.append(upload_id, "model.safetensors", 0, b"x" * 60) == 60
    with pytest.raises(UploadError) as refused:
        uploads.append(upload_id, "optimizer.safetensors", 0, b"x" * 41)
    assert (refused.value.status, refused.value.message) == (
        413,
        "Upload too large: 101 bytes; a checkpoint of this model holds at most 100",
    )
    assert not (tmp_path / ".uploads" / upload_id / "optimizer.safetensors").exists()


def test_the_budget_is_three_copies_of_the_weights_and_a_chunk(
    secured_server: LiveServer,
) -> None:
    model = secured_server.state.trainer.model
    weights = sum(p.numel() * 4 for p in model.parameters())
    assert upload_budget(model) == 3 * weights + MAX_CHUNK
    assert secured_server.state.uploads.max_bytes == upload_budget(model)


def test_two_hundred_starts_leave_four_folders(
    secured_server: LiveServer, secured_http: httpx.Client
) -> None:
    answers = [secured_http.post("/v1/checkpoint/uploads") for _ in range(200)]
    statuses = [a.status_code for a in answers]
    opened = statuses.count(200)
    assert opened <= 4 and statuses.count(429) == 200 - opened
    assert answers[-1].json()["error_type"] == "invalid_request"
    base = secured_server.state.uploads.base
    assert len(list(base.iterdir())) == secured_server.state.uploads.open_count <= 4
    for answer in answers[:opened]:
        upload_id = answer.json()["upload_id"]
        secured_server.state.uploads.discard(upload_id)


def test_an_upload_over_its_budget_is_refused(
    secured_server: LiveServer, secured_http: httpx.Client
) -> None:
    secured_server.state.uploads.max_bytes = 1000  # the live server's cap, made small
    try:
        upload_id = secured_http.post("/v1/checkpoint/uploads").json()["upload_id"]
        url = f"/v1/checkpoint/uploads/{upload_id}"
        assert secured_http.put(f"{url}/model.safetensors", content=b"x" * 900).status_code == 200
        over = secured_http.put(f"{url}/optimizer.safetensors", content=b"x" * 200)
    finally:
        secured_server.state.uploads.max_bytes = upload_budget(secured_server.state.trainer.model)
        secured_server.state.uploads.discard(upload_id)
    assert over.status_code == 413
    assert over.json() == {
        "status": "error",
        "error": "Upload too large: 1100 bytes; a checkpoint of this model holds at most 1000",
        "error_type": "payload_too_large",
    }


def test_a_content_range_of_5000_digits_is_a_400(secured_http: httpx.Client) -> None:
    upload_id = secured_http.post("/v1/checkpoint/uploads").json()["upload_id"]
    url = f"/v1/checkpoint/uploads/{upload_id}"
    answer = secured_http.put(
        f"{url}/state.json", content=b"{}", headers={"Content-Range": f"bytes {'9' * 5000}-2/*"}
    )
    secured_http.post(f"{url}/commit")  # refused, and the folder goes
    assert answer.status_code == 400
    assert answer.json()["error"] == (
        "Content-Range must be 'bytes FIRST-LAST/TOTAL' (at most 18 digits each), "
        f"got 'bytes {'9' * 54}'"
    )


@pytest.mark.parametrize("name", ["state.json", "MANIFEST.json"])
def test_deeply_nested_json_in_an_upload_is_a_422(
    secured_server: LiveServer, secured_http: httpx.Client, name: str
) -> None:
    files = saved_checkpoint(secured_http, f"nested-{name[:5].lower()}")
    files = (
        with_manifest({**files, "state.json": b"[" * 200_000}) if name == "state.json" else files
    )
    files = {**files, name: b"[" * 200_000}
    upload_id = secured_http.post("/v1/checkpoint/uploads").json()["upload_id"]
    for file, content in files.items():
        put = secured_http.put(f"/v1/checkpoint/uploads/{upload_id}/{file}", content=content)
        assert put.status_code == 200, put.text
    answer = secured_http.post(f"/v1/checkpoint/uploads/{upload_id}/commit")
    assert answer.status_code == 422
    assert answer.json() == {
        "status": "error",
        "error": f"Refused checkpoint: {name} is nested too deeply",
        "error_type": "invalid_checkpoint",
    }
    assert not (secured_server.state.uploads.base / upload_id).exists()
