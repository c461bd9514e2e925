"""A job's learning rate per batch: constant, or linear warmup then cosine decay.

A job knows its total number of batches, so the rate of batch ``seq`` is a
pure function of ``(seq, total)``: a resumed job picks up the schedule where
it stood.

>>> round(learning_rate(0, 100, 1e-3, "cosine", warmup=0.1), 6)
0.0001
>>> learning_rate(99, 100, 1e-3, "none", warmup=0.1)
0.001
"""

from __future__ import annotations

import math

from corteza.wire.jobs import LrSchedule

FLOOR = 0.1  # cosine decays to this share of the base rate


def learning_rate(
    seq: int, total: int, base: float, schedule: LrSchedule, *, warmup: float
) -> float:
    """The rate of batch ``seq`` (0-based) of ``total``; ``base`` is the server's rate."""
    if schedule == "none" or total <= 1:
        return base
    warm = int(warmup * total)
    if seq < warm:
        return base * (seq + 1) / warm
    progress = (seq - warm) / max(1, total - 1 - warm)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return base * (FLOOR + (1.0 - FLOOR) * cosine)
