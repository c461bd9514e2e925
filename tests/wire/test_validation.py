"""Batch validation: every sample checked, the first offender named, the seed's words."""

from __future__ import annotations

import numpy as np
import pytest

from corteza.wire import BatchError, ErrorType, batch_from_rows, validate_batch

ROW = [0.5, -0.5, 0.25]


def _refused(rows: list, labels: list, **kwargs: int) -> BatchError:
    with pytest.raises(BatchError) as info:
        batch_from_rows(rows, labels, input_dim=3, **kwargs)
    return info.value


def test_a_good_batch_becomes_float32_arrays() -> None:
    batch = batch_from_rows([ROW, ROW], [0, 1], input_dim=3, epochs=2)
    assert batch.inputs.dtype == np.float32
    assert batch.inputs.shape == (2, 3)
    assert batch.labels.tolist() == [0.0, 1.0]
    assert batch.epochs == 2
    assert batch.size == 2


def test_sequences_keep_their_time_axis() -> None:
    batch = batch_from_rows([[ROW, ROW], [ROW, ROW]], [0, 1], input_dim=3)
    assert batch.inputs.shape == (2, 2, 3)


def test_wrong_width_in_a_later_sample_is_found() -> None:
    err = _refused([ROW, ROW, [1.0, 2.0]], [0, 0, 1])
    assert err.message == "Input dimension mismatch: expected 3D, got 2D"
    assert err.error_type is ErrorType.DIMENSION_MISMATCH
    assert err.sample == 2


def test_wrong_width_inside_a_sequence_is_found() -> None:
    err = _refused([[ROW, ROW], [ROW, [1.0] * 5]], [0, 1])
    assert err.message == "Input dimension mismatch: expected 3D, got 5D"
    assert err.sample == 1


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), 1e39])
def test_non_finite_values_are_refused(bad: float) -> None:
    err = _refused([ROW, [0.0, bad, 0.0]], [0, 1])
    assert err.message == "Non-finite input: sample 1 contains NaN or Inf"
    assert err.error_type is ErrorType.NON_FINITE_INPUT
    assert err.sample == 1


@pytest.mark.parametrize(("label", "shown"), [(2, "2"), (-1, "-1"), (0.5, "0.5")])
def test_labels_other_than_0_or_1_are_refused(label: float, shown: str) -> None:
    err = _refused([ROW, ROW], [1, label])
    assert err.message == f"Invalid anomaly_label: sample 1 has {shown}, expected 0 or 1"
    assert err.error_type is ErrorType.INVALID_LABEL


def test_empty_batch_is_refused() -> None:
    err = _refused([], [])
    assert err.message == "Empty batch: send at least one sample"
    assert err.error_type is ErrorType.EMPTY_BATCH


def test_ragged_sequences_are_refused() -> None:
    err = _refused([[ROW, ROW], [ROW]], [0, 1])
    assert err.message == "Ragged batch: sample 1 has 1 time step, sample 0 has 2 time steps"
    assert err.error_type is ErrorType.RAGGED_BATCH


def test_mixing_flat_rows_and_sequences_is_ragged() -> None:
    err = _refused([ROW, [ROW, ROW]], [0, 1])
    assert err.message == "Ragged batch: sample 1 has 2 time steps, sample 0 has a flat row"


def test_epochs_out_of_range_are_refused() -> None:
    err = _refused([ROW], [0], epochs=0)
    assert err.message == "epochs must be between 1 and 1000, got 0"


def test_array_batches_are_checked_the_same_way() -> None:
    inputs = np.zeros((4, 3), dtype=np.float64)
    inputs[3, 1] = np.nan
    with pytest.raises(BatchError, match="Non-finite input: sample 3 contains NaN or Inf"):
        validate_batch(inputs, np.zeros(4), input_dim=3)
    with pytest.raises(BatchError, match="Input dimension mismatch: expected 5D, got 3D"):
        validate_batch(np.zeros((4, 3)), np.zeros(4), input_dim=5)
    with pytest.raises(BatchError, match="Expected 4 anomaly labels, got 3"):
        validate_batch(np.zeros((4, 3)), np.zeros(3), input_dim=3)
    with pytest.raises(BatchError, match="Empty batch: send at least one sample"):
        validate_batch(np.zeros((0, 3)), np.zeros(0), input_dim=3)
