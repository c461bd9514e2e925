"""``split`` of a memory-mapped file reads rows by index: the file is not copied."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from corteza.client.data.datasets import RowView, iter_batches, open_dataset, save_dataset, split
from corteza.client.data.synthetic import make_dataset


def test_a_mapped_file_splits_into_views_with_the_same_rows(tmp_path: Path) -> None:
    made = make_dataset(300, input_dim=12, seed=2)
    save_dataset(made, tmp_path / "d.npz")  # uncompressed: memory-mapped when opened
    mapped = open_dataset(tmp_path / "d.npz")
    assert isinstance(mapped.X, np.memmap)
    train, held = split(mapped, 0.2, seed=5)
    copied_train, copied_held = split(made, 0.2, seed=5)  # in memory: copies, as before
    assert isinstance(train.X, RowView)
    assert isinstance(held.X, RowView)
    assert not isinstance(copied_train.X, RowView)
    assert (len(train), len(held), train.X.shape) == (240, 60, (240, 12))
    np.testing.assert_array_equal(train.X[np.arange(240)], copied_train.X)
    np.testing.assert_array_equal(held.X[10:20], copied_held.X[10:20])
    np.testing.assert_array_equal(np.asarray(held.X), copied_held.X)
    np.testing.assert_array_equal(train.y, copied_train.y)
    view_batches = list(iter_batches(train.X, train.y, batch_size=64, seed=0, epoch=1))
    copy_batches = list(
        iter_batches(copied_train.X, copied_train.y, batch_size=64, seed=0, epoch=1)
    )
    for (xv, yv), (xc, yc) in zip(view_batches, copy_batches, strict=True):
        np.testing.assert_array_equal(xv, xc)
        np.testing.assert_array_equal(yv, yc)
