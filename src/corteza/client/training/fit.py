"""``fit``: train a whole dataset through a server, batch by batch, with feedback.

By default the batches stream over ``WS /v1/train/stream`` with a window in
flight, exactly once, surviving dropped connections and server restarts
(:mod:`corteza.client.training.stream`); ``stream=False`` sends one request per batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict

from corteza.client.client import Client
from corteza.client.data.datasets import iter_batches
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
    stream: bool = True,
    window: int = DEFAULT_WINDOW,
    run_id: str | None = None,
    on_event: EventCallback | None = None,
    give_up_after: float | None = None,
) -> FitSummary:
    """Train ``epochs`` passes over (X, y), shuffled by ``seed``.

    Every ``feedback_every`` batches (0 turns it off) the server's proposed
    dendrite adjustments are sent back, validated when the batch loss
    improved on the previous feedback point. With ``until_loss``, training
    stops once the mean loss of the last :data:`UNTIL_WINDOW` batches is at or
    below it (on the stream, the batches already in flight then are trained
    too, and counted: at most ``window - 1`` more).

    Batches stream over a WebSocket with ``window`` in flight (``stream=False``,
    or a server without the stream: one request per batch), each applied
    exactly once as ``(run_id, seq)``; a dropped connection or a restarted
    server is waited for and the run resumes where the server's checkpoint
    stands (``give_up_after`` seconds of failing bounds the wait). ``on_event``
    hears what happens meanwhile (``"waiting"``, ``"resumed"``, ``"fallback"``...).
    A client speaking the seed's JSON (``wire_format="json"``) sends plain
    requests, as the seed's server understands.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if client.wire_format == "binary":
        # Imported here: stream.py builds on this module's report and summary.
        from corteza.client.training.stream import StreamingTrainer

        trainer = StreamingTrainer(
            client,
            X,
            y,
            epochs=epochs,
            batch_size=batch_size,
            seed=seed,
            window=window,
            run_id=run_id,
            feedback_every=feedback_every,
            until_loss=until_loss,
            on_batch=on_batch,
            on_event=on_event,
            give_up_after=give_up_after,
            transport="stream" if stream else "rest",
        )
        return trainer.run()
    return _fit_plain(
        client,
        X,
        y,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        feedback_every=feedback_every,
        until_loss=until_loss,
        on_batch=on_batch,
    )


def _fit_plain(
    client: Client,
    X: NDArray[np.float32],
    y: NDArray[np.float32],
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    feedback_every: int,
    until_loss: float | None,
    on_batch: Callable[[BatchReport], None] | None,
) -> FitSummary:
    """One plain request per batch, as the seed's server understands."""
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
                client.send_feedback(
                    response.outputs.dendrite_adjustments, improved, batch_id=response.batch_id
                )
                summary.feedback_sent += 1
                summary.feedback_validated += int(improved)
                reference_loss = response.loss
            summary.seconds = time.perf_counter() - started
            if on_batch is not None:
                on_batch(
                    BatchReport(
                        epoch,
                        summary.batches,
                        per_epoch * epochs,
                        summary.samples,
                        response,
                        summary.seconds,
                        Ack.from_response(response),
                    )
                )
            if until_loss is not None and window_mean(summary.losses) <= until_loss:
                summary.reached_target = True
                return summary
    return summary


def window_mean(losses: list[float]) -> float:
    """Mean of the last UNTIL_WINDOW losses; inf until there are that many."""
    if len(losses) < UNTIL_WINDOW:
        return float("inf")
    return sum(losses[-UNTIL_WINDOW:]) / UNTIL_WINDOW
