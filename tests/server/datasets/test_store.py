"""The dataset store on a real folder: add, open memory-mapped, list, delete, refuse."""

from __future__ import annotations

import hashlib
import io
import json
import math
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from corteza.server.datasets.checks import DatasetError, check_name
from corteza.server.datasets.store import DatasetStore, StoredDataset, UnknownDatasetError
from corteza.wire import ErrorType
from corteza.wire.data_files import read_data_file
from corteza.wire.errors import DataFileError

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


ROWS, COLS = 131_072, 32  # X of 16.8 MB as float32


def _compressed_npz(path: Path, *, declared: tuple[int, ...] | None = None) -> str:
    """A compressed .npz of zeros written a MiB at a time (X's header may claim ``declared``)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, shape in (("X", (ROWS, COLS)), ("y", (ROWS,))):
            header = io.BytesIO()
            claimed = declared if declared is not None and name == "X" else shape
            np.lib.format.write_array_header_1_0(
                header, {"descr": "<f4", "fortran_order": False, "shape": claimed}
            )
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                member.write(header.getvalue())
                left = math.prod(shape) * 4
                while left:
                    member.write(bytes(min(left, 1 << 20)))
                    left -= min(left, 1 << 20)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _peak(run: Callable[[], object]) -> tuple[object, int]:
    """What ``run`` returned (or raised) and the peak of memory it allocated (numpy's too)."""
    tracemalloc.start()
    try:
        result: object = run()
    except Exception as exc:  # the test looks at what was raised
        result = exc
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return result, peak


def test_a_compressed_npz_over_the_quota_is_refused_before_it_is_inflated(
    tmp_path: Path,
) -> None:
    store = DatasetStore(tmp_path / "data", max_bytes=1_000_000)
    sha = _compressed_npz(tmp_path / "bomb.npz")
    assert (tmp_path / "bomb.npz").stat().st_size < 100_000
    refused, peak = _peak(lambda: store.add_file(tmp_path / "bomb.npz", "bomb.npz", sha, COLS))
    assert isinstance(refused, DatasetError)
    assert (refused.status, refused.error_type) == (413, ErrorType.QUOTA_EXCEEDED)
    assert refused.message == (
        "Dataset quota exceeded: 17.3 MB do not fit in the 1.0 MB left of 1.0 MB "
        "(--max-data-gb; remove one with corteza datasets rm)"
    )
    assert peak < 4_000_000  # X alone is 16.8 MB: nothing was inflated
    assert list((tmp_path / "data").glob("*")) == []


def test_a_header_that_claims_more_than_its_member_holds_is_a_422(tmp_path: Path) -> None:
    store = DatasetStore(tmp_path / "data", max_bytes=None)
    sha = _compressed_npz(tmp_path / "lie.npz", declared=(10**13, COLS))
    with pytest.raises(DatasetError) as refused:
        store.add_file(tmp_path / "lie.npz", "lie.npz", sha, COLS)
    assert (refused.value.status, refused.value.error_type) == (422, ErrorType.INVALID_DATA)
    assert refused.value.message == (
        f"Malformed data: lie.npz member X.npy declares shape [10000000000000, {COLS}] of "
        f"float32 (1280000000000000 bytes) but holds {ROWS * COLS * 4} bytes"
    )


@pytest.mark.parametrize("kind", ["compressed.npz", "table.npy", "float64.npy"])
def test_ram_stays_flat_while_a_large_file_is_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    for module in ("wire.data_arrays", "wire.data_files", "server.datasets.convert"):
        monkeypatch.setattr(f"corteza.{module}.CHUNK_BYTES", 1 << 20)
    path = tmp_path / kind
    if kind == "compressed.npz":
        sha = _compressed_npz(path)
    else:
        dtype = np.float64 if kind == "float64.npy" else np.float32
        table = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(ROWS, COLS + 1))
        table[:] = 0
        table.flush()
        del table
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
    store = DatasetStore(tmp_path / "data", max_bytes=None)
    stored, peak = _peak(lambda: store.add_file(path, kind, sha, COLS))
    assert isinstance(stored, StoredDataset), stored
    assert (stored.samples, stored.shape) == (ROWS, [ROWS, COLS])
    assert peak < 6_000_000  # X alone is 16.8 MB
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["data", kind])  # no scratch


def test_json_nested_too_deep_is_a_422(tmp_path: Path) -> None:
    store = DatasetStore(tmp_path / "data", max_bytes=None)
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(DatasetError) as refused:
        store.add_file(path, "deep.json", sha, WIDTH)
    assert (refused.value.status, refused.value.message) == (
        422,
        "Malformed data: deep.json is not valid JSON: it is nested too deep",
    )


def test_a_refused_label_is_named_in_at_most_80_characters(tmp_path: Path) -> None:
    path = tmp_path / "long.json"
    samples = [{"input_data": [0.0] * 4, "anomaly_label": "x" * 10_000}]
    path.write_text(json.dumps(samples))
    with pytest.raises(DataFileError) as info:
        read_data_file(path)
    assert str(info.value) == (
        f'Invalid anomaly_label: sample 0 has "{"x" * 76}..., expected 0 or 1'
    )
