"""What a training run reports, its defaults, and the one cadence of feedback and stopping.

:func:`~corteza.client.training.fit.fit` and the
:class:`~corteza.client.training.stream.StreamingTrainer` both hand a
:class:`BatchReport` per batch to ``on_batch`` and return a :class:`FitSummary`;
both send feedback and stop at ``until_loss`` by the same :class:`Cadence`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from corteza.wire import TrainResponse

DEFAULT_BATCH_SIZE = 32
DEFAULT_FEEDBACK_EVERY = 5
DEFAULT_WINDOW = 4  # batches in flight on the stream
UNTIL_WINDOW = 5  # batches averaged for the until_loss test

Transport = Literal["stream", "rest"]
EventCallback = Callable[[str, str], None]  # (kind, message), e.g. ("waiting", "server ...")


class Ack(BaseModel):
    """The server's answer to one batch, whichever way it travelled.

    A replayed batch (``replayed``: applied before, not trained again) whose
    stored answer the server no longer holds carries its ``seq`` only.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    seq: int | None = None
    loss: float | None = None
    anomaly_prob: float | None = None
    batch_size: int | None = None
    step: int | None = None
    replayed: bool = False
    dendrite_adjustments: list[float] | None = None
    batch_id: str | None = None  # what feedback on this batch refers to

    @classmethod
    def from_response(cls, response: TrainResponse) -> Ack:
        return cls(
            seq=response.seq,
            loss=response.loss,
            anomaly_prob=response.outputs.anomaly_prob,
            batch_size=response.batch_size,
            step=response.step,
            replayed=response.replayed,
            dendrite_adjustments=response.outputs.dendrite_adjustments,
            batch_id=response.batch_id,
        )


@dataclass(frozen=True)
class BatchReport:
    """Progress after one batch, handed to the ``on_batch`` callback."""

    epoch: int  # 0-based
    index: int  # batches done so far, over all epochs
    total: int  # batches in the whole run
    samples: int  # samples trained so far
    response: TrainResponse | None  # the full answer of a request; None for a streamed batch
    elapsed: float  # seconds since the run began
    ack: Ack  # the answer's summary, on every transport

    @property
    def loss(self) -> float | None:
        return self.ack.loss

    @property
    def anomaly_prob(self) -> float | None:
        return self.ack.anomaly_prob


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
    run_id: str | None = None  # the server's run, to resume it (None: sent without one)
    transport: Transport = "rest"  # how the batches travelled in the end
    durable_seq: int | None = None  # the last batch a server checkpoint is known to hold
    # Batches the server already held for this run (same data and settings) when this call
    # began: counted in ``batches``, not trained again.
    resumed_batches: int = 0

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


@dataclass
class Cadence:
    """When a run sends feedback and when it stops: one policy, whichever the transport.

    Feedback goes after the batch that brings the count ``feedback_every``
    batches past the previous feedback point (0: never): every
    ``feedback_every``-th batch when batches are counted one at a time, the
    first one at or past the mark when a resumed stream counts several at once.
    It is validated when the batch loss is below that of the last feedback
    sent (the first is always validated). The run stops once the mean loss of
    the last :data:`UNTIL_WINDOW` batches is at or below ``until_loss``.
    """

    feedback_every: int = DEFAULT_FEEDBACK_EVERY
    until_loss: float | None = None
    _next_feedback: int = field(init=False, repr=False)
    _reference_loss: float | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        self._next_feedback = self.feedback_every

    def feedback_due(self, batches: int) -> bool:
        """Whether feedback goes after the batch that made the count ``batches``."""
        if not self.feedback_every or batches < self._next_feedback:
            return False
        self._next_feedback = batches + self.feedback_every
        return True

    def validates(self, loss: float) -> bool:
        """Whether feedback on a batch with this loss is validated (the loss improved)."""
        return self._reference_loss is None or loss < self._reference_loss

    def feedback_sent(self, loss: float) -> None:
        """Feedback on a batch with this loss reached the server: the next compares to it."""
        self._reference_loss = loss

    def reached(self, losses: list[float]) -> bool:
        """Whether the ``until_loss`` target is met by these losses, the latest last."""
        return self.until_loss is not None and window_mean(losses) <= self.until_loss


def window_mean(losses: list[float]) -> float:
    """Mean of the last UNTIL_WINDOW losses; inf until there are that many."""
    if len(losses) < UNTIL_WINDOW:
        return float("inf")
    return sum(losses[-UNTIL_WINDOW:]) / UNTIL_WINDOW
