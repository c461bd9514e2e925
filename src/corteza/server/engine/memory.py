"""Device memory: the peak for ``/status``, and a batch too large for the GPU as a clear error.

A batch that does not fit raises ``torch.cuda.OutOfMemoryError`` somewhere in its
forward or backward pass. The trainer catches it, drops the gradients, empties
PyTorch's cache and raises :class:`DeviceOutOfMemoryError` instead: nothing was
applied, the worker lives on, and the client hears (413, ``out_of_memory``) a
batch size that would fit.

That size comes from what the batches that did fit used: :class:`MemoryMeter`
measures each batch's peak above the memory held between batches (weights,
optimizer moments), takes away one set of gradients, and keeps the largest cost
per sample-step seen. The device's free memory divided by that cost (with 10%
to spare) is the suggestion; before any batch fitted it is half the batch.
"""

from __future__ import annotations

import math

import torch

HEADROOM = 0.9  # of the free memory a suggested batch may use


class DeviceOutOfMemoryError(RuntimeError):
    """A batch that does not fit in device memory; nothing was applied."""

    def __init__(self, batch_size: int, fits: int, where: str) -> None:
        super().__init__(
            f"A batch of {batch_size} samples does not fit in the memory of {where}; nothing "
            f"was applied. Send batches of at most {fits} samples"
        )
        self.batch_size = batch_size
        self.fits = fits


def fitting_batch_size(
    batch_size: int, steps_per_sample: int, bytes_per_step: float | None, free_bytes: int
) -> int:
    """A batch size below ``batch_size`` that should fit in ``free_bytes``.

    ``bytes_per_step`` is the activation memory of one sample-step (one time step of
    one sample), measured on a batch that fitted; None when none has.

    >>> fitting_batch_size(4096, 1, 1e6, 2_000_000_000)
    1800
    >>> fitting_batch_size(4096, 1, None, 2_000_000_000)
    2048
    """
    if bytes_per_step is None or bytes_per_step <= 0 or not math.isfinite(bytes_per_step):
        estimate = batch_size // 2
    else:
        estimate = int(free_bytes * HEADROOM // (bytes_per_step * max(1, steps_per_sample)))
    return max(1, min(batch_size - 1, estimate))


class MemoryMeter:
    """Peak device memory, and the cost per sample-step of the batches that fitted."""

    def __init__(self, device: torch.device, fixed_bytes: int = 0) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.fixed_bytes = fixed_bytes  # allocated during every step whatever the batch size
        self.peak_bytes = 0  # the highest allocation seen since the server started
        self.bytes_per_step: float | None = None  # the largest cost per sample-step seen
        self._baseline = 0

    def batch_started(self) -> None:
        """Before a batch: the memory held between batches is the baseline."""
        if self.cuda:
            self._baseline = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)

    def batch_done(self, samples: int, steps_per_sample: int) -> None:
        """After a batch that fitted: update the peak and the cost per sample-step."""
        if not self.cuda:
            return
        peak = torch.cuda.max_memory_allocated(self.device)
        self.peak_bytes = max(self.peak_bytes, peak)
        used = peak - self._baseline - self.fixed_bytes
        if used > 0 and samples > 0:
            cost = used / (samples * max(1, steps_per_sample))
            self.bytes_per_step = max(cost, self.bytes_per_step or 0.0)

    def out_of_memory(self, batch_size: int, steps_per_sample: int) -> DeviceOutOfMemoryError:
        """After ``torch.cuda.OutOfMemoryError`` (gradients dropped): empty the cache, and
        the error to raise in its place."""
        free = 0
        where = "this device"
        if self.cuda:
            self.peak_bytes = max(self.peak_bytes, torch.cuda.max_memory_allocated(self.device))
            torch.cuda.empty_cache()
            free, total = torch.cuda.mem_get_info(self.device)
            name = torch.cuda.get_device_name(self.device)
            where = f"the GPU ({name}, {total / 2**30:.1f} GiB)"
        fits = fitting_batch_size(batch_size, steps_per_sample, self.bytes_per_step, free)
        return DeviceOutOfMemoryError(batch_size, fits, where)

    def snapshot(self) -> dict[str, float]:
        """``peak_memory_mb`` for ``/status`` (0 off CUDA)."""
        peak = self.peak_bytes
        if self.cuda:
            peak = max(peak, torch.cuda.max_memory_allocated(self.device))
        return {"peak_memory_mb": round(peak / 2**20, 1)}
