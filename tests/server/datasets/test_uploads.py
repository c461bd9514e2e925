"""Dataset uploads in progress, on a real folder: a busy upload stays, a removed one stays gone."""

from __future__ import annotations

from pathlib import Path

import pytest

from corteza.server.datasets.checks import DatasetError
from corteza.server.datasets.store import DatasetStore
from corteza.server.datasets.uploads import DatasetUploads
from corteza.wire import ErrorType

SHA = "ab" * 32


def test_a_busy_upload_is_not_removed_and_a_removed_one_is_not_recreated(
    tmp_path: Path,
) -> None:
    uploads = DatasetUploads(DatasetStore(tmp_path, max_bytes=None))
    upload, _ = uploads.create(length=10, sha256=SHA, name="d.npz")
    claimed = uploads.begin(upload.id, 0)
    with pytest.raises(DatasetError) as busy:
        uploads.discard(upload.id)
    assert (busy.value.status, busy.value.error_type) == (423, ErrorType.UPLOAD_CONFLICT)
    assert busy.value.message == (
        f"Upload {upload.id} is receiving a request; abandon it once that ends"
    )
    assert uploads.write(claimed, b"abc") == 3
    uploads.end(upload.id)
    assert uploads.discard(upload.id)
    with pytest.raises(DatasetError) as gone:
        uploads.write(claimed, b"def")  # a PATCH that outlived its upload
    assert (gone.value.status, gone.value.message) == (
        404,
        f"No upload {upload.id!r}: it was removed",
    )
    assert list(uploads.base.iterdir()) == []


def test_expiry_skips_an_upload_being_written(tmp_path: Path) -> None:
    uploads = DatasetUploads(DatasetStore(tmp_path, max_bytes=None), ttl_s=-1.0)
    upload, _ = uploads.create(length=10, sha256=SHA, name="d.npz")
    uploads.begin(upload.id, 0)
    uploads.create(length=10, sha256="cd" * 32, name="e.npz")  # expires what is idle
    assert uploads.get(upload.id)[1] == 0


@pytest.mark.parametrize("name", ["big.json", "big.csv"])
def test_a_text_file_over_the_limit_is_refused_before_a_byte_is_sent(
    tmp_path: Path, name: str
) -> None:
    uploads = DatasetUploads(DatasetStore(tmp_path, max_bytes=None))
    with pytest.raises(DatasetError) as refused:
        uploads.create(length=70_000_000, sha256=SHA, name=name)
    assert (refused.value.status, refused.value.error_type) == (
        413,
        ErrorType.PAYLOAD_TOO_LARGE,
    )
    assert refused.value.message == (
        f"{name} is 70.0 MB: a .json or .csv dataset may be at most 64.0 MB (the server "
        "parses text in memory); save it as .npz (numpy.savez), which has no such limit"
    )
    assert uploads.create(length=64_000_001, sha256=SHA, name="big.npz")[1] == 0


def test_uploads_beyond_the_cap_are_refused_as_a_quota(tmp_path: Path) -> None:
    uploads = DatasetUploads(DatasetStore(tmp_path, max_bytes=None), max_open=1)
    uploads.create(length=10, sha256=SHA, name="d.npz")
    with pytest.raises(DatasetError) as full:
        uploads.create(length=10, sha256="cd" * 32, name="e.npz")
    assert (full.value.status, full.value.error_type) == (429, ErrorType.QUOTA_EXCEEDED)
    assert full.value.message.startswith("Too many uploads in progress (1): finish one")
