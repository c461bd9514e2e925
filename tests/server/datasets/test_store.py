"""The dataset store on a real folder: add, open memory-mapped, list, delete, refuse."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from corteza.server.datasets.store import (
    DatasetError,
    DatasetStore,
    UnknownDatasetError,
    check_name,
)
from corteza.wire import ErrorType

WIDTH = 8


def _npz(path: Path, x: np.ndarray, y: np.ndarray) -> str:
    np.savez(path, X=x, y=y)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _rows(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.random((n, WIDTH), dtype=np.float32), (np.arange(n) % 2).astype(np.float32)


def test_a_file_is_stored_by_its_hash_and_opened_memory_mapped(tmp_path: Path) -> None:
    store = DatasetStore(tmp_path / "data", max_bytes=None)
    x, y = _rows(10)
    sha = _npz(tmp_path / "d.npz", x, y)
    stored = store.add_file(tmp_path / "d.npz", "d.npz", sha, WIDTH)
    opened = store.open(sha)
    assert isinstance(opened.inputs, np.memmap) and not opened.inputs.flags.writeable
    np.testing.assert_array_equal(opened.inputs, x)
    np.testing.assert_array_equal(opened.labels, y)
    assert opened.describe() == {
        "sha256": sha,
        "name": "d.npz",
        "samples": 10,
        "shape": [10, WIDTH],
        "bytes": stored.bytes,
        "added": stored.added,
    }
    assert sorted(p.name for p in (tmp_path / "data" / sha).iterdir()) == [
        "inputs.npy",
        "labels.npy",
        "meta.json",
    ]
    assert [d.sha256 for d in store.list()] == [sha]
    assert store.delete(sha) and not store.has(sha) and store.list() == []
    assert not store.delete(sha)
    with pytest.raises(UnknownDatasetError, match=f"No dataset {sha} on this server"):
        store.open(sha)


def test_arrays_with_targets_are_stored_and_the_same_arrays_are_one_dataset(
    tmp_path: Path,
) -> None:
    store = DatasetStore(tmp_path, max_bytes=None)
    x, y = _rows(4)
    targets = {"dendrite_target": np.zeros((4, 16), np.float32)}
    first = store.add_arrays(x, y, targets=targets)
    again = store.add_arrays(x.copy(), y.copy(), targets=targets)
    assert first.sha256 == again.sha256 and len(store.list()) == 1
    assert first.targets["dendrite_target"].shape == (4, 16)


@pytest.mark.parametrize(
    ("bad", "message", "error_type"),
    [
        ("nan", "Non-finite input: sample 7 contains NaN or Inf", ErrorType.NON_FINITE_INPUT),
        (
            "label",
            "Invalid anomaly_label: sample 3 has 2, expected 0 or 1",
            ErrorType.INVALID_LABEL,
        ),
        ("width", "Input dimension mismatch: expected 8D, got 5D", ErrorType.DIMENSION_MISMATCH),
    ],
)
def test_a_bad_row_is_named_and_nothing_is_stored(
    tmp_path: Path, bad: str, message: str, error_type: ErrorType
) -> None:
    store = DatasetStore(tmp_path / "data", max_bytes=None)
    x, y = _rows(10)
    if bad == "nan":
        x[7, 2] = np.nan
    elif bad == "label":
        y[3] = 2
    else:
        x = x[:, :5]
    sha = _npz(tmp_path / "d.npz", x, y)
    with pytest.raises(DatasetError) as refused:
        store.add_file(tmp_path / "d.npz", "d.npz", sha, WIDTH)
    assert (refused.value.status, refused.value.message) == (422, message)
    assert refused.value.error_type is error_type
    assert store.list() == [] and list((tmp_path / "data").glob("*")) == []


def test_rows_are_numbered_in_the_file_across_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("corteza.wire.data_files.CHUNK_BYTES", 3 * WIDTH * 4)  # 3 rows a chunk
    store = DatasetStore(tmp_path, max_bytes=None)
    x, y = _rows(10)
    x[8, 0] = np.inf
    with pytest.raises(DatasetError) as refused:
        store.add_arrays(x, y)
    assert refused.value.message == "Non-finite input: sample 8 contains NaN or Inf"


def test_a_csv_error_names_the_uploaded_file_not_the_servers_path(tmp_path: Path) -> None:
    store = DatasetStore(tmp_path / "data", max_bytes=None)
    part = tmp_path / "0123456789abcdef.part"
    part.write_text("a,b\n1,0\n2,x\n")
    sha = hashlib.sha256(part.read_bytes()).hexdigest()
    with pytest.raises(DatasetError) as refused:
        store.add_file(part, "mine.csv", sha, 1)
    assert refused.value.message == (
        "Malformed data: mine.csv, line 3, column 2: 'x' is not a number"
    )


def test_a_hash_mismatch_is_refused_before_reading(tmp_path: Path) -> None:
    store = DatasetStore(tmp_path / "data", max_bytes=None)
    x, y = _rows(3)
    sha = _npz(tmp_path / "d.npz", x, y)
    with pytest.raises(DatasetError) as refused:
        store.add_file(tmp_path / "d.npz", "d.npz", "0" * 64, WIDTH)
    assert refused.value.message == (
        f"Upload corrupted: the file's sha256 is {sha}, expected {'0' * 64}; nothing was stored"
    )
    assert refused.value.error_type is ErrorType.HASH_MISMATCH


def test_the_quota_and_the_disk_refuse_what_would_not_fit(tmp_path: Path) -> None:
    store = DatasetStore(tmp_path, max_bytes=2_000_000)
    with pytest.raises(DatasetError) as quota:
        store.room_for(1_500_000, reserved=1_000_000)
    assert (quota.value.status, quota.value.error_type) == (413, ErrorType.QUOTA_EXCEEDED)
    assert quota.value.message == (
        "Dataset quota exceeded: 1.5 MB do not fit in the 1.0 MB left of 2.0 MB "
        "(--max-data-gb; remove one with corteza datasets rm)"
    )
    unbounded = DatasetStore(tmp_path, max_bytes=None)
    with pytest.raises(DatasetError) as disk:
        unbounded.room_for(10**18)
    assert (disk.value.status, disk.value.error_type) == (507, ErrorType.INSUFFICIENT_STORAGE)
    assert disk.value.message.startswith(
        "Not enough disk space: storing 1000000000.0 GB needs 2000000000.0 GB free, "
        "the data folder has "
    )


@pytest.mark.parametrize("name", ["../x.npz", "a/b.npz", "a\\b.npz", "..", "", "x\n.npz"])
def test_a_name_that_is_not_one_plain_file_name_is_refused(name: str) -> None:
    with pytest.raises(DatasetError, match="must be one plain file name"):
        check_name(name)


def test_a_crash_leaves_no_half_dataset(tmp_path: Path) -> None:
    (tmp_path / ".tmp-0123").mkdir(parents=True)
    (tmp_path / ".tmp-0123" / "inputs.npy").write_bytes(b"half")
    store = DatasetStore(tmp_path, max_bytes=None)
    assert store.list() == [] and not (tmp_path / ".tmp-0123").exists()
