"""What a job trains: its split of the dataset, and batch ``seq`` as a pure function of the spec.

Batch ``seq`` is batch ``seq % per_epoch`` of epoch ``seq // per_epoch``, in
:func:`~corteza.wire.holdout.batch_order` of ``(seed, epoch)`` over the
training rows: the batches ``corteza train`` would stream from the same file,
so a job resumed after a restart trains exactly the batches it had not.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from corteza.server.datasets.store import StoredDataset
from corteza.wire import Batch
from corteza.wire.holdout import batch_order, split_indices
from corteza.wire.jobs import JobSpec, batches_per_epoch


@dataclass
class JobPlan:
    """A job's rows, its batch count, and its batches on demand (read from the memory map)."""

    dataset: StoredDataset
    spec: JobSpec
    train_rows: NDArray[np.intp] = field(init=False)
    held_rows: NDArray[np.intp] = field(init=False)
    _orders: dict[int, NDArray[np.int64]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        n = self.dataset.samples
        if self.spec.holdout > 0:
            self.train_rows, self.held_rows = split_indices(
                np.asarray(self.dataset.labels), self.spec.holdout, self.spec.seed
            )
        else:
            self.train_rows, self.held_rows = np.arange(n), np.arange(0)

    @property
    def per_epoch(self) -> int:
        return batches_per_epoch(len(self.train_rows), self.spec.batch_size)

    @property
    def total(self) -> int:
        return self.per_epoch * self.spec.epochs

    def rows(self, seq: int) -> NDArray[np.intp]:
        """The dataset rows of batch ``seq``, in training order."""
        epoch, index = divmod(seq, self.per_epoch)
        order = self._orders.get(epoch)
        if order is None:  # one epoch's order kept at a time
            self._orders = {
                epoch: batch_order(len(self.train_rows), seed=self.spec.seed, epoch=epoch)
            }
            order = self._orders[epoch]
        size = self.spec.batch_size
        return self.train_rows[order[index * size : (index + 1) * size]]

    def batch(self, seq: int) -> Batch:
        """Batch ``seq``, copied from the memory map (validated when the dataset was stored)."""
        rows = self.rows(seq)
        targets = {
            name: np.ascontiguousarray(array[rows], dtype=np.float32)
            for name, array in self.dataset.targets.items()
        }
        return Batch(
            np.ascontiguousarray(self.dataset.inputs[rows], dtype=np.float32),
            np.ascontiguousarray(self.dataset.labels[rows], dtype=np.float32),
            1,
            targets.get("dendrite_target"),
            targets.get("coherence_target"),
        )
