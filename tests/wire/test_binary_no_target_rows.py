"""A row of NaN in a binary batch's target means "no target", as a JSON sample without one."""

from __future__ import annotations

import numpy as np
import pytest

from corteza.wire import BatchError, decode_batch, encode_batch

WIDTH = 8


def _batch(target: np.ndarray) -> bytes:
    x = np.zeros((3, WIDTH), dtype=np.float32)
    return encode_batch(x, np.array([0, 1, 0]), dendrite_target=target)


def test_a_row_of_nan_is_a_sample_without_a_target() -> None:
    target = np.zeros((3, 16), dtype=np.float32)
    target[1] = np.nan
    decoded = decode_batch(_batch(target), input_dim=WIDTH)
    got = decoded.batch.dendrite_target
    assert got is not None
    assert np.isnan(got[1]).all() and np.isfinite(got[[0, 2]]).all()


def test_all_rows_of_nan_is_no_target_at_all() -> None:
    target = np.full((3, 16), np.nan, dtype=np.float32)
    assert decode_batch(_batch(target), input_dim=WIDTH).batch.dendrite_target is None


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_row_partly_non_finite_is_still_refused(bad: float) -> None:
    target = np.zeros((3, 16), dtype=np.float32)
    target[2, 5] = bad
    with pytest.raises(BatchError) as info:
        decode_batch(_batch(target), input_dim=WIDTH)
    assert info.value.message == "Non-finite dendrite_target: sample 2 contains NaN or Inf"
