"""``fit``: train a whole dataset through a server, batch by batch, with feedback.

By default the batches stream over ``WS /v1/train/stream`` with a window in
flight, exactly once, surviving dropped connections and server restarts
(:mod:`corteza.client.training.stream`); ``stream=False`` sends one request per batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from corteza.client.client import Client
from corteza.client.training.batches import Batches
from corteza.client.training.progress import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_FEEDBACK_EVERY,
    DEFAULT_WINDOW,
    Ack,
    BatchReport,
    Cadence,
    EventCallback,
    FitSummary,
)
from corteza.client.training.stream import StreamingTrainer


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
    dendrite_target: NDArray[np.float32] | None = None,
    coherence_target: NDArray[np.float32] | None = None,
) -> FitSummary:
    """Train ``epochs`` passes over (X, y), shuffled by ``seed``.

    Every ``feedback_every`` batches (0 turns it off) the server's proposed
    dendrite adjustments are sent back, validated when the batch loss
    improved on the previous feedback point. With ``until_loss``, training
    stops once the mean loss of the last
    :data:`~corteza.client.training.progress.UNTIL_WINDOW` batches is at or
    below it (on the stream, the batches already in flight then are trained
    too, and counted: at most ``window - 1`` more).

    Batches stream over a WebSocket with ``window`` in flight (``stream=False``,
    or a server without the stream: one request per batch), each applied
    exactly once as ``(run_id, seq)``; a dropped connection or a restarted
    server is waited for and the run resumes where the server's checkpoint
    stands (``give_up_after`` seconds of failing bounds the wait). ``on_event``
    hears what happens meanwhile (``"waiting"``, ``"resumed"``, ``"fallback"``...).
    A client speaking the seed's JSON (``wire_format="json"``) sends plain
    requests, as the seed's server understands. Optional per-sample
    ``dendrite_target`` (N, 16) and ``coherence_target`` (N, 64) travel with
    their rows (a row of NaN: no target for that sample).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if client.wire_format == "binary":
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
            dendrite_target=dendrite_target,
            coherence_target=coherence_target,
        )
        return trainer.run()
    return _fit_plain(
        client,
        X,
        y,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        cadence=Cadence(feedback_every, until_loss),
        on_batch=on_batch,
        targets=(dendrite_target, coherence_target),
    )


def _fit_plain(
    client: Client,
    X: NDArray[np.float32],
    y: NDArray[np.float32],
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    cadence: Cadence,
    on_batch: Callable[[BatchReport], None] | None,
    targets: tuple[NDArray[np.float32] | None, NDArray[np.float32] | None] = (None, None),
) -> FitSummary:
    """One plain request per batch, as the seed's server understands."""
    batches = Batches(X, y, batch_size, seed, epochs, *targets)
    per_epoch = batches.per_epoch
    summary = FitSummary()
    started = time.perf_counter()
    for epoch in range(epochs):
        for seq in range(epoch * per_epoch, (epoch + 1) * per_epoch):
            xb, yb = batches.get(seq)
            dendrite, coherence = batches.targets(seq)
            response = client.train_batch(
                xb, yb, dendrite_target=dendrite, coherence_target=coherence
            )
            summary.samples += len(xb)
            summary.batches += 1
            summary.losses.append(response.loss)
            summary.anomaly_probs.append(response.outputs.anomaly_prob)
            if cadence.feedback_due(summary.batches):
                improved = cadence.validates(response.loss)
                client.send_feedback(
                    response.outputs.dendrite_adjustments, improved, batch_id=response.batch_id
                )
                summary.feedback_sent += 1
                summary.feedback_validated += int(improved)
                cadence.feedback_sent(response.loss)
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
            if cadence.reached(summary.losses):
                summary.reached_target = True
                return summary
    return summary
