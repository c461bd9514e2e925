"""``fit``: train a whole dataset through a server, batch by batch, with feedback."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from corteza.client.client import Client
from corteza.client.datasets import iter_batches
from corteza.wire import TrainResponse

DEFAULT_BATCH_SIZE = 32
DEFAULT_FEEDBACK_EVERY = 5
UNTIL_WINDOW = 5  # batches averaged for the until_loss test


@dataclass(frozen=True)
class BatchReport:
    """Progress after one batch, handed to the ``on_batch`` callback."""

    epoch: int  # 0-based
    index: int  # batches done so far, over all epochs
    total: int  # batches in the whole run
    samples: int  # samples trained so far
    response: TrainResponse
    elapsed: float  # seconds since the run began


@dataclass
class FitSummary:
    """The seed example's closing summary."""

    samples: int = 0
    batches: int = 0
    losses: list[float] = field(default_factory=list)
    anomaly_probs: list[float] = field(default_factory=list)
    seconds: float = 0.0
    feedback_sent: int = 0
    feedback_validated: int = 0
    reached_target: bool = False  # the until_loss target was met (training stopped there)

    @property
    def final_loss(self) -> float | None:
        return self.losses[-1] if self.losses else None

    @property
    def mean_anomaly(self) -> float:
        return float(np.mean(self.anomaly_probs)) if self.anomaly_probs else 0.0

    @property
    def anomaly_rate(self) -> float:
        """Share of batches whose mean anomaly probability was above 0.5."""
        if not self.anomaly_probs:
            return 0.0
        return float(np.mean(np.asarray(self.anomaly_probs) > 0.5))

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0


def fit(
    client: Client,
    X: NDArray[np.float32],
    y: NDArray[np.float32],
    *,
    epochs: int = 1,
    batch_size: int = DEFAULT_BATCH_SIZE,
    seed: int = 0,
    feedback_every: int = DEFAULT_FEEDBACK_EVERY,
    until_loss: float | None = None,
    on_batch: Callable[[BatchReport], None] | None = None,
) -> FitSummary:
    """Train ``epochs`` passes over (X, y), shuffled by ``seed``.

    Every ``feedback_every`` batches (0 turns it off) the server's proposed
    dendrite adjustments are sent back, validated when the batch loss
    improved on the previous feedback point. With ``until_loss``, training
    stops once the mean loss of the last :data:`UNTIL_WINDOW` batches is at or
    below it.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    per_epoch = -(-len(X) // batch_size)
    summary = FitSummary()
    started = time.perf_counter()
    reference_loss: float | None = None
    for epoch in range(epochs):
        for xb, yb in iter_batches(X, y, batch_size=batch_size, seed=seed, epoch=epoch):
            response = client.train_batch(xb, yb)
            summary.samples += len(xb)
            summary.batches += 1
            summary.losses.append(response.loss)
            summary.anomaly_probs.append(response.outputs.anomaly_prob)
            if feedback_every and summary.batches % feedback_every == 0:
                improved = reference_loss is None or response.loss < reference_loss
                client.send_feedback(response.outputs.dendrite_adjustments, improved)
                summary.feedback_sent += 1
                summary.feedback_validated += int(improved)
                reference_loss = response.loss
            summary.seconds = time.perf_counter() - started
            if on_batch is not None:
                on_batch(
                    BatchReport(
                        epoch, summary.batches, per_epoch * epochs, summary.samples, response,
                        summary.seconds,
                    )
                )  # fmt: skip
            if until_loss is not None and _window_mean(summary.losses) <= until_loss:
                summary.reached_target = True
                return summary
    return summary


def _window_mean(losses: list[float]) -> float:
    """Mean of the last UNTIL_WINDOW losses; inf until there are that many."""
    if len(losses) < UNTIL_WINDOW:
        return float("inf")
    return sum(losses[-UNTIL_WINDOW:]) / UNTIL_WINDOW
