"""A batch too large for the device: the size suggested instead, and the message."""

from __future__ import annotations

import pytest
import torch

from corteza.server.engine.memory import DeviceOutOfMemoryError, MemoryMeter, fitting_batch_size


@pytest.mark.parametrize(
    ("batch", "steps", "per_step", "free", "fits"),
    [
        (4096, 1, 1e6, 2_000_000_000, 1800),  # 90% of 2 GB at 1 MB a sample
        (4096, 10, 1e6, 2_000_000_000, 180),  # ten time steps a sample cost ten times more
        (4096, 1, None, 2_000_000_000, 2048),  # nothing measured yet: half
        (4096, 1, 1e3, 2_000_000_000, 4095),  # the measure says it fits: one less than sent
        (2, 1, 1e12, 1_000, 1),  # never below one
        (1, 1, None, 0, 1),
        (64, 1, float("nan"), 10**9, 32),
    ],
)
def test_the_suggested_batch_size(
    batch: int, steps: int, per_step: float | None, free: int, fits: int
) -> None:
    assert fitting_batch_size(batch, steps, per_step, free) == fits


def test_the_error_names_the_batch_and_a_size_that_fits() -> None:
    error = DeviceOutOfMemoryError(4096, 1800, "the GPU (Tesla T4, 14.6 GiB)")
    assert str(error) == (
        "A batch of 4096 samples does not fit in the memory of the GPU (Tesla T4, 14.6 GiB); "
        "nothing was applied. Send batches of at most 1800 samples"
    )
    assert (error.batch_size, error.fits) == (4096, 1800)


def test_off_cuda_the_meter_reports_no_peak_and_suggests_half() -> None:
    meter = MemoryMeter(torch.device("cpu"))
    meter.batch_started()
    meter.batch_done(64, 1)
    assert meter.snapshot() == {"peak_memory_mb": 0.0}
    error = meter.out_of_memory(64, 1)
    assert str(error) == (
        "A batch of 64 samples does not fit in the memory of this device; nothing was "
        "applied. Send batches of at most 32 samples"
    )
