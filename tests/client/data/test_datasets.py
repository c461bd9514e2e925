"""Datasets: every format round-trips, bad files are refused in the server's words."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from corteza.client.data.datasets import (
    Dataset,
    batch_order,
    iter_batches,
    open_dataset,
    save_dataset,
    split,
)
from corteza.client.data.synthetic import make_dataset
from corteza.client.errors import InvalidDataError

FORMATS = [".npz", ".npy", ".csv", ".json"]


def _data(n: int = 40, d: int = 12, seed: int = 0) -> Dataset:
    return make_dataset(n, input_dim=d, recipe="sensor", seed=seed)


def _with_targets(data: Dataset) -> Dataset:
    rng = np.random.default_rng(1)
    n = len(data)
    return Dataset(
        data.X,
        data.y,
        rng.uniform(-1, 1, (n, 16)).astype(np.float32),
        rng.uniform(-1, 1, (n, 64)).astype(np.float32),
    )


def _sequences(n: int = 10, t: int = 3, d: int = 5) -> Dataset:
    rng = np.random.default_rng(2)
    return Dataset(
        rng.normal(size=(n, t, d)).astype(np.float32), (np.arange(n) % 2).astype(np.float32)
    )


def _refused(path: Path) -> InvalidDataError:
    with pytest.raises(InvalidDataError) as info:
        open_dataset(path)
    return info.value


def _write_json(path: Path, samples: object) -> Path:
    path.write_text(json.dumps(samples))
    return path


# ------------------------------------------------------------------ round trips


@pytest.mark.parametrize("suffix", FORMATS)
def test_every_format_round_trips_exactly(tmp_path: Path, suffix: str) -> None:
    data = _data()
    back = open_dataset(save_dataset(data, tmp_path / f"data{suffix}"))
    assert back.X.dtype == np.float32
    assert back.y.dtype == np.float32
    np.testing.assert_array_equal(back.X, data.X)
    np.testing.assert_array_equal(back.y, data.y)
    assert back.dendrite_target is None
    assert back.coherence_target is None


@pytest.mark.parametrize("suffix", [".npz", ".json"])
def test_targets_round_trip(tmp_path: Path, suffix: str) -> None:
    data = _with_targets(_data())
    back = open_dataset(save_dataset(data, tmp_path / f"data{suffix}"))
    assert back.dendrite_target is not None
    assert back.coherence_target is not None
    assert data.dendrite_target is not None
    assert data.coherence_target is not None
    np.testing.assert_array_equal(back.dendrite_target, data.dendrite_target)
    np.testing.assert_array_equal(back.coherence_target, data.coherence_target)


@pytest.mark.parametrize("suffix", [".npz", ".json"])
def test_sequences_round_trip(tmp_path: Path, suffix: str) -> None:
    data = _sequences()
    back = open_dataset(save_dataset(data, tmp_path / f"data{suffix}"))
    assert back.X.shape == (10, 3, 5)
    assert back.input_dim == 5
    np.testing.assert_array_equal(back.X, data.X)


def test_json_in_the_seeds_shape_opens(tmp_path: Path) -> None:
    path = _write_json(
        tmp_path / "dataset.json",
        [
            {"input_data": [0.5, -1.0, 2.0], "anomaly_label": 0},
            {"input_data": [1.5, 0.0, -2.0], "anomaly_label": 1},
        ],
    )
    data = open_dataset(path)
    np.testing.assert_array_equal(data.X, [[0.5, -1.0, 2.0], [1.5, 0.0, -2.0]])
    np.testing.assert_array_equal(data.y, [0.0, 1.0])


def test_json_sequences_open_as_three_dimensional(tmp_path: Path) -> None:
    path = _write_json(
        tmp_path / "dataset.json",
        [
            {"input_data": [[1, 2], [3, 4], [5, 6]], "anomaly_label": 1},
            {"input_data": [[0, 0], [0, 0], [0, 1]], "anomaly_label": 0},
        ],
    )
    data = open_dataset(path)
    assert data.X.shape == (2, 3, 2)
    assert data.X[0, 2, 1] == 6.0


def test_a_train_layer2_body_opens_as_json(tmp_path: Path) -> None:
    body = {"samples": [{"input_data": [1.0, 2.0], "anomaly_label": 1}], "epochs": 3}
    data = open_dataset(_write_json(tmp_path / "body.json", body))
    np.testing.assert_array_equal(data.X, [[1.0, 2.0]])


def test_csv_with_a_header(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("a,b,label\n1,2,0\n\n3.5,-4e-1,1\n")
    data = open_dataset(path)
    np.testing.assert_array_equal(data.X, np.array([[1.0, 2.0], [3.5, -0.4]], dtype=np.float32))
    np.testing.assert_array_equal(data.y, [0.0, 1.0])


def test_csv_without_a_header_keeps_the_first_line(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("1,2,0\r\n3,4,1\r\n")
    data = open_dataset(path)
    np.testing.assert_array_equal(data.X, [[1.0, 2.0], [3.0, 4.0]])


def test_npy_is_memory_mapped(tmp_path: Path) -> None:
    data = open_dataset(save_dataset(_data(), tmp_path / "data.npy"))
    assert isinstance(data.X, np.memmap)


def test_npz_written_by_save_dataset_is_memory_mapped(tmp_path: Path) -> None:
    data = open_dataset(save_dataset(_data(), tmp_path / "data.npz"))
    assert isinstance(data.X, np.memmap)


def test_compressed_npz_is_inflated_to_disk_not_ram(tmp_path: Path) -> None:
    source = _data()
    np.savez_compressed(tmp_path / "data.npz", X=source.X, y=source.y.astype(np.int64))
    data = open_dataset(tmp_path / "data.npz")
    assert isinstance(data.X, np.memmap) and isinstance(data.y, np.memmap)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.npz"]  # unlinked scratch files
    np.testing.assert_array_equal(data.X, source.X)
    assert data.y.dtype == np.float32


def test_float64_npy_is_converted_to_float32(tmp_path: Path) -> None:
    np.save(tmp_path / "data.npy", np.array([[0.1, 0.2, 1.0], [0.3, 0.4, 0.0]]))
    data = open_dataset(tmp_path / "data.npy")
    assert data.X.dtype == np.float32
    np.testing.assert_array_equal(data.y, [1.0, 0.0])


def test_save_dataset_replaces_a_file_and_leaves_nothing_aside(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    path.write_bytes(b"old")
    save_dataset(_data(), path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.npz"]
    assert len(open_dataset(path)) == 40


# ------------------------------------------------------------------ refusals


def test_missing_file(tmp_path: Path) -> None:
    error = _refused(tmp_path / "data.npz")
    assert error.message == f"No such file: {tmp_path / 'data.npz'}"
    assert error.error_type == "file_not_found"


def test_unknown_extension(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_text("1,2,0\n")
    error = _refused(path)
    assert error.message == "Unknown data format '.txt': use .json, .npz, .npy or .csv"
    assert error.error_type == "unknown_format"


def test_unknown_extension_on_save(tmp_path: Path) -> None:
    with pytest.raises(InvalidDataError, match=r"^Unknown data format '\.h5'"):
        save_dataset(_data(), tmp_path / "data.h5")


@pytest.mark.parametrize("suffix", FORMATS)
def test_empty_file(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"data{suffix}"
    path.write_bytes(b"")
    error = _refused(path)
    assert error.message == f"Empty data: {path} has no samples"
    assert error.error_type == "empty_data"


@pytest.mark.parametrize(
    ("name", "content"),
    [("data.json", "[]"), ("data.csv", "x0,x1,label\n\n"), ("data.csv", "\n\n")],
)
def test_files_without_samples(tmp_path: Path, name: str, content: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    assert _refused(path).message == f"Empty data: {path} has no samples"


def test_npy_without_rows(tmp_path: Path) -> None:
    np.save(tmp_path / "data.npy", np.zeros((0, 5), dtype=np.float32))
    assert _refused(tmp_path / "data.npy").error_type == "empty_data"


@pytest.mark.parametrize("suffix", FORMATS)
def test_a_label_other_than_0_or_1(tmp_path: Path, suffix: str) -> None:
    data = _data(6, 10)
    y = data.y.copy()
    y[3] = 2
    path = save_dataset(Dataset(data.X, y), tmp_path / f"data{suffix}")
    error = _refused(path)
    assert error.message == "Invalid anomaly_label: sample 3 has 2, expected 0 or 1"
    assert error.error_type == "invalid_label"
    assert error.sample == 3


def test_a_fractional_label(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("1,2,0\n3,4,0.5\n")
    assert _refused(path).message == "Invalid anomaly_label: sample 1 has 0.5, expected 0 or 1"


def test_a_label_that_is_not_a_number(tmp_path: Path) -> None:
    path = _write_json(
        tmp_path / "data.json",
        [
            {"input_data": [1.0], "anomaly_label": 0},
            {"input_data": [1.0], "anomaly_label": "yes"},
        ],
    )
    assert _refused(path).message == 'Invalid anomaly_label: sample 1 has "yes", expected 0 or 1'


@pytest.mark.parametrize("suffix", FORMATS)
def test_nan_or_inf_in_the_inputs(tmp_path: Path, suffix: str) -> None:
    data = _data(6, 10)
    X = data.X.copy()
    X[3, 1] = np.nan if suffix != ".json" else np.inf
    path = save_dataset(Dataset(X, data.y), tmp_path / f"data{suffix}")
    error = _refused(path)
    assert error.message == "Non-finite input: sample 3 contains NaN or Inf"
    assert error.error_type == "non_finite_input"
    assert error.sample == 3


def test_values_beyond_float32_are_non_finite(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("1,2,0\n1e39,4,1\n")
    assert _refused(path).message == "Non-finite input: sample 1 contains NaN or Inf"


def test_nan_in_a_target(tmp_path: Path) -> None:
    data = _with_targets(_data(6, 10))
    assert data.coherence_target is not None
    data.coherence_target[2, 5] = np.nan
    error = _refused(save_dataset(data, tmp_path / "data.npz"))
    assert error.message == "Non-finite target: sample 2 coherence_target contains NaN or Inf"


def test_ragged_json_rows(tmp_path: Path) -> None:
    path = _write_json(
        tmp_path / "data.json",
        [
            {"input_data": [1, 2, 3], "anomaly_label": 0},
            {"input_data": [1, 2, 3], "anomaly_label": 0},
            {"input_data": [1, 2], "anomaly_label": 1},
        ],
    )
    error = _refused(path)
    assert error.message == "Ragged data: sample 2 has 2 values, sample 0 has 3 values"
    assert error.error_type == "ragged_data"
    assert error.sample == 2


def test_ragged_json_sequences(tmp_path: Path) -> None:
    path = _write_json(
        tmp_path / "data.json",
        [
            {"input_data": [[1, 2], [3, 4]], "anomaly_label": 0},
            {"input_data": [[1, 2]], "anomaly_label": 1},
            {"input_data": [1, 2], "anomaly_label": 1},
        ],
    )
    assert _refused(path).message == (
        "Ragged data: sample 1 has 1 time step of 2 values, sample 0 has 2 time steps of 2 values"
    )


def test_json_sequence_with_steps_of_different_widths(tmp_path: Path) -> None:
    path = _write_json(
        tmp_path / "data.json",
        [
            {"input_data": [[1, 2], [3]], "anomaly_label": 0},
        ],
    )
    assert _refused(path).message == "Ragged data: the time steps of sample 0 differ in length"


def test_ragged_csv_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("x0,x1,label\n1,2,0\n3,4,1\n5,1\n")
    error = _refused(path)
    assert error.message == "Ragged data: sample 2 (line 4) has 2 columns, sample 0 has 3"
    assert error.sample == 2


def test_a_csv_field_that_is_not_a_number(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("1,2,0\n3,abc,1\n")
    error = _refused(path)
    assert error.message == f"Malformed data: {path}, line 2, column 2: 'abc' is not a number"
    assert error.error_type == "invalid_data"


def test_a_csv_header_with_a_number_is_data_and_refused(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("0,1,label\n1,2,0\n")
    assert _refused(path).message == (
        f"Malformed data: {path}, line 1, column 3: 'label' is not a number"
    )


def test_a_csv_with_only_a_label_column(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("0\n1\n")
    assert _refused(path).message == (
        f"Malformed data: {path} has shape [2, 1]; each line needs at least one input and the label"
    )


def test_malformed_json(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_text('[{"input_data": [1, 2], ')
    error = _refused(path)
    assert error.message.startswith(f"Malformed data: {path} is not valid JSON: ")
    assert error.error_type == "invalid_data"


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"rows": []}, 'must hold a list of {"input_data": [...], "anomaly_label": 0}'),
        ([{"input_data": [1]}], "sample 0 must be an object with 'input_data' and 'anomaly_label'"),
        ([{"input_data": [], "anomaly_label": 0}], "sample 0 input_data must be a non-empty list"),
        ([{"input_data": 3, "anomaly_label": 0}], "sample 0 input_data must be a non-empty list"),
        ([{"input_data": [1, "2"], "anomaly_label": 0}], "sample 0 input_data must hold only"),
        ([{"input_data": [1, None], "anomaly_label": 0}], "sample 0 input_data must hold only"),
    ],
)
def test_json_of_the_wrong_shape(tmp_path: Path, document: object, message: str) -> None:
    error = _refused(_write_json(tmp_path / "data.json", document))
    assert error.message.startswith("Malformed data: ")
    assert message in error.message


def test_json_targets_on_some_samples_only(tmp_path: Path) -> None:
    path = _write_json(
        tmp_path / "data.json",
        [
            {"input_data": [1.0], "anomaly_label": 0, "dendrite_target": [0.0] * 16},
            {"input_data": [1.0], "anomaly_label": 0},
        ],
    )
    assert _refused(path).message == (
        "Malformed data: sample 1 has no 'dendrite_target', sample 0 has one"
    )


def test_npz_without_labels(tmp_path: Path) -> None:
    np.savez(tmp_path / "data.npz", X=np.zeros((3, 4), dtype=np.float32))
    assert _refused(tmp_path / "data.npz").message == (
        f"Malformed data: {tmp_path / 'data.npz'} has no array 'y' (found: X)"
    )


def test_npz_with_labels_of_the_wrong_length(tmp_path: Path) -> None:
    np.savez(tmp_path / "data.npz", X=np.zeros((3, 4), np.float32), y=np.zeros(2, np.float32))
    assert _refused(tmp_path / "data.npz").message == (
        "Malformed data: 3 samples in X but y has shape [2]"
    )


def test_npz_with_targets_of_the_wrong_width(tmp_path: Path) -> None:
    np.savez(
        tmp_path / "data.npz",
        X=np.zeros((3, 4), np.float32),
        y=np.zeros(3, np.float32),
        dendrite_target=np.zeros((3, 8), np.float32),
    )
    assert _refused(tmp_path / "data.npz").message == (
        "Malformed data: dendrite_target has shape [3, 8], expected [3, 16]"
    )


def test_npz_with_object_arrays_is_not_unpickled(tmp_path: Path) -> None:
    X = np.empty((2, 2), dtype=object)
    X[:] = 1.0
    np.savez(tmp_path / "data.npz", X=X, y=np.zeros(2))
    error = _refused(tmp_path / "data.npz")
    assert error.message.startswith(f"Malformed data: {tmp_path / 'data.npz'} is not a readable")
    assert "pickle" in error.message


def test_a_file_that_is_not_npz(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    path.write_text("hello")
    assert _refused(path).message.startswith(f"Malformed data: {path} is not a readable .npz")


def test_a_file_that_is_not_npy(tmp_path: Path) -> None:
    path = tmp_path / "data.npy"
    path.write_bytes(b"\x80\x04hello")
    assert _refused(path).message == f"Malformed data: {path} is not a .npy file"


def test_a_three_dimensional_npy_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "data.npy"
    np.save(path, np.zeros((2, 3, 4), dtype=np.float32))
    assert _refused(path).message == (
        f"Malformed data: {path} has shape [2, 3, 4]; "
        "a .npy file holds (N, D + 1): the inputs, then the label"
    )


@pytest.mark.parametrize("suffix", [".csv", ".npy"])
def test_sequences_and_targets_are_not_saved_flat(tmp_path: Path, suffix: str) -> None:
    expected = (
        f"Malformed data: a {suffix} file holds flat samples without targets: "
        "save sequences or targets as .npz or .json"
    )
    for data in (_sequences(), _with_targets(_data())):
        with pytest.raises(InvalidDataError) as info:
            save_dataset(data, tmp_path / f"data{suffix}")
        assert info.value.message == expected
    assert list(tmp_path.iterdir()) == []


def test_save_into_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(InvalidDataError) as info:
        save_dataset(_data(), tmp_path / "nowhere" / "data.npz")
    assert info.value.message == f"No such directory: {tmp_path / 'nowhere'}"
    assert info.value.error_type == "file_not_found"


def test_invalid_data_error_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="No such file"):
        open_dataset(tmp_path / "data.csv")


# ------------------------------------------------------------------ split


def test_split_sizes_and_stratification() -> None:
    data = make_dataset(1000, input_dim=8, recipe="seed", seed=3)
    train, held = split(data, holdout=0.2, seed=0)
    assert (len(train), len(held)) == (800, 200)
    anomalies = int(data.y.sum())
    assert int(held.y.sum()) == round(200 * anomalies / 1000)
    assert int(train.y.sum()) + int(held.y.sum()) == anomalies


def test_split_partitions_the_samples() -> None:
    data = Dataset(
        np.arange(50, dtype=np.float32)[:, None], (np.arange(50) % 4 == 0).astype(np.float32)
    )
    train, held = split(data, holdout=0.3, seed=5)
    ids = np.concatenate([train.X[:, 0], held.X[:, 0]])
    assert sorted(ids.tolist()) == list(range(50))
    assert np.all(np.diff(train.X[:, 0]) > 0)  # file order kept
    assert np.all(np.diff(held.X[:, 0]) > 0)


def test_split_is_deterministic_and_depends_on_the_seed() -> None:
    data = _data(100)
    first, second, other = split(data, seed=7), split(data, seed=7), split(data, seed=8)
    np.testing.assert_array_equal(first[1].X, second[1].X)
    assert not np.array_equal(first[1].X, other[1].X)


def test_split_keeps_targets() -> None:
    train, held = split(_with_targets(_data(20)), holdout=0.25)
    assert held.dendrite_target is not None
    assert held.dendrite_target.shape == (5, 16)
    assert train.coherence_target is not None
    assert train.coherence_target.shape == (15, 64)


@pytest.mark.parametrize(("n", "holdout"), [(3, 0.1), (3, 0.9), (10, 0.0), (10, 1.0)])
def test_split_refuses_an_empty_part(n: int, holdout: float) -> None:
    with pytest.raises(ValueError, match="holdout"):
        split(_data(n), holdout=holdout)


# ------------------------------------------------------------------ batches


def test_batch_order_is_a_pure_function_of_seed_and_epoch() -> None:
    np.testing.assert_array_equal(
        batch_order(100, seed=3, epoch=2), batch_order(100, seed=3, epoch=2)
    )
    assert not np.array_equal(batch_order(100, seed=3, epoch=2), batch_order(100, seed=3, epoch=3))
    assert not np.array_equal(batch_order(100, seed=3, epoch=2), batch_order(100, seed=4, epoch=2))
    assert sorted(batch_order(100, seed=3, epoch=2).tolist()) == list(range(100))


def test_iter_batches_covers_every_sample_once_per_epoch(tmp_path: Path) -> None:
    source = Dataset(np.arange(70, dtype=np.float32).reshape(35, 2), np.zeros(35, np.float32))
    data = open_dataset(save_dataset(source, tmp_path / "data.npy"))  # memory-mapped
    batches = list(iter_batches(data.X, data.y, batch_size=8, seed=1, epoch=0))
    assert [len(xb) for xb, _ in batches] == [8, 8, 8, 8, 3]
    assert all(type(xb) is np.ndarray and xb.dtype == np.float32 for xb, _ in batches)
    seen = np.concatenate([xb[:, 0] for xb, _ in batches])
    np.testing.assert_array_equal(seen, source.X[batch_order(35, seed=1, epoch=0), 0])
    again = np.concatenate(
        [xb[:, 0] for xb, _ in iter_batches(data.X, data.y, batch_size=8, seed=1, epoch=0)]
    )
    np.testing.assert_array_equal(seen, again)


def test_dataset_batches_carry_targets() -> None:
    data = _with_targets(_data(10))
    batches = list(data.batches(4, seed=0, epoch=1))
    assert [len(b) for b in batches] == [4, 4, 2]
    order = batch_order(10, seed=0, epoch=1)
    assert batches[0].dendrite_target is not None
    assert data.dendrite_target is not None
    np.testing.assert_array_equal(batches[0].dendrite_target, data.dendrite_target[order[:4]])


def test_batch_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="batch_size must be at least 1, got 0"):
        next(
            iter_batches(
                np.zeros((2, 2), np.float32), np.zeros(2, np.float32), batch_size=0, seed=0, epoch=0
            )
        )


def test_synthetic_data_is_the_same_dataset_type() -> None:
    data = make_dataset(5, input_dim=10, seed=0)
    assert type(data) is Dataset
    assert data.dendrite_target is None
    assert math.isclose(float(data.y.sum()), float(np.count_nonzero(data.y)))


def test_dataset_refuses_mismatched_shapes() -> None:
    with pytest.raises(InvalidDataError, match=r"^Malformed data: X has shape \[4\]"):
        Dataset(np.zeros(4, np.float32), np.zeros(4, np.float32))
