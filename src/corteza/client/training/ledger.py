"""The accounts of a streamed run: which batches are trained, each counted once.

A batch may be answered twice (sent again after a dropped connection), never
(applied while its answer was lost) or be lost by the server (restarted from
an older checkpoint). The :class:`Ledger` keeps the summary true through all
three: batches ``0..counted-1`` are trained and in it, once each, whatever the
transport did. It does no I/O; the
:class:`~corteza.client.training.stream.StreamingTrainer` feeds it.
"""

from __future__ import annotations

from corteza.client.training.batches import Batches
from corteza.client.training.progress import Ack, BatchReport, FitSummary, Transport
from corteza.wire import TrainResponse


class Ledger:
    """Batches ``0..counted-1`` are trained and counted in :attr:`summary`, each once."""

    def __init__(self, batches: Batches, transport: Transport) -> None:
        self.batches = batches
        self.summary = FitSummary(transport=transport)
        self.counted = 0
        self.stopping = False  # until_loss reached: send nothing more
        self.pending = 0  # batches in flight when the last connection dropped

    @property
    def total(self) -> int:
        """Batches in the whole run."""
        return self.batches.total

    def done(self) -> bool:
        return self.counted >= self.total or (self.stopping and not self.pending)

    def resume_at(self, next_seq: int, window: int) -> int:
        """The seq to send first, given the server's ``next_seq``.

        Batches the server applied while their answers were lost are sent again
        when there are few (their stored answers come back, marked replayed) and
        counted as trained without an answer when there are many (a run resumed
        by a new process). A server that lost batches (no checkpoint held them)
        gets them again: the answer is then below :attr:`counted`.
        """
        self.pending = 0
        next_seq = min(next_seq, self.total)
        if next_seq > self.counted:
            if self.stopping or next_seq - self.counted > window:
                self.count_unanswered(next_seq)
            return self.counted
        return next_seq

    def count_unanswered(self, upto: int) -> None:
        """Count batches up to ``upto`` as trained, their answers lost."""
        for seq in range(self.counted, upto):
            self.summary.samples += self.batches.size(seq)
            self.summary.batches += 1
        self.counted = max(self.counted, upto)

    def count(self, seq: int, ack: Ack) -> bool:
        """Count batch ``seq`` as trained with this answer; False if it already was."""
        if seq < self.counted:
            return False  # trained again after the server lost it: counted the first time
        self.count_unanswered(seq)
        summary = self.summary
        summary.samples += self.batches.size(seq)
        summary.batches += 1
        if ack.loss is not None:
            summary.losses.append(ack.loss)
        if ack.anomaly_prob is not None:
            summary.anomaly_probs.append(ack.anomaly_prob)
        self.counted = seq + 1
        return True

    def report(
        self, seq: int, ack: Ack, response: TrainResponse | None, elapsed: float
    ) -> BatchReport:
        """The ``on_batch`` report of batch ``seq``, just counted."""
        self.summary.seconds = elapsed
        summary = self.summary
        return BatchReport(
            self.batches.epoch(seq),
            summary.batches,
            self.total,
            summary.samples,
            response,
            elapsed,
            ack,
        )
