"""Dendritic feedback that learns: validated adjustments become a regression target.

The server remembers the inputs of its recent batches by ``batch_id``
(bounded by count and bytes). Validated feedback on a batch takes one step
on the dendrite head alone, towards ``tanh(head(features)) == ajustes``,
its learning rate ``feedback_lr × reward`` (AdamW would normalise a weighted
loss away, so the reward scales the rate); the rest of the network, and so the anomaly and
coherence heads, do not move. Feedback that is not validated is recorded
only. The head's feedback optimizer lives beside the training optimizer and
is not part of checkpoints (the head's weights are).

Adjustments are targets of a tanh, so each must lie within
``[-FEEDBACK_BOUND, FEEDBACK_BOUND]`` (1.0): a value beyond it can never be
reached and only inflates the loss (sixteen ``1e20`` overflow it to Inf).
Anything else is refused by :func:`check_adjustments` before a step or a count.
"""

from __future__ import annotations

import contextlib
import math
import secrets
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

from corteza.server.distributed.control import Op
from corteza.server.engine.precision import MixedPrecision, StepOutcome
from corteza.server.engine.trainer import Trainer

MEMORY_BATCHES = 64  # batches remembered for feedback
MEMORY_BYTES = 256 * 1024 * 1024  # and at most this much of their inputs
FEEDBACK_BOUND = 1.0  # |adjustment| at most this: the dendrite head's tanh range


class InvalidFeedbackError(ValueError):
    """Adjustments the dendrite head cannot take: non-finite or beyond the bound."""


def check_adjustments(values: list[float]) -> None:
    """Raise :class:`InvalidFeedbackError` unless every value is finite and within the bound."""
    for index, value in enumerate(values):
        if not math.isfinite(value) or abs(value) > FEEDBACK_BOUND:
            raise InvalidFeedbackError(
                f"ajustes_aplicados[{index}] is {value:.6g}: each adjustment must be finite and "
                f"within [-{FEEDBACK_BOUND:g}, {FEEDBACK_BOUND:g}] (the dendrite head is tanh)"
            )


class UnknownBatchError(LookupError):
    """Feedback on a batch the server does not remember (unknown, or evicted)."""


@dataclass(frozen=True)
class FeedbackStep:
    batch_id: str
    loss: float  # MSE of the dendrite head against the target, before the step
    skipped: bool = False  # fp16: the loss scaler skipped the step (nothing applied)


class DendriteFeedback:
    """Remembers recent batches and turns validated feedback into head steps."""

    def __init__(self, trainer: Trainer, lr: float) -> None:
        self.trainer = trainer
        self._head = trainer.model.capa5.dendrites
        self.lr = lr  # a step's learning rate is this times its reward
        self._optimizer = torch.optim.AdamW(self._head.parameters(), lr=lr, weight_decay=0.0)
        # The trainer's precision, with a loss scaler of its own for this optimizer.
        self._mixed = MixedPrecision(trainer.precision, trainer.device)
        self._memory: OrderedDict[str, NDArray[np.float32]] = OrderedDict()
        self._bytes = 0

    def remember(self, inputs: NDArray[np.float32]) -> str:
        """Keep a trained batch's inputs; returns its new ``batch_id``."""
        batch_id = secrets.token_hex(8)
        self._memory[batch_id] = inputs
        self._bytes += inputs.nbytes
        while len(self._memory) > MEMORY_BATCHES or (
            self._bytes > MEMORY_BYTES and len(self._memory) > 1
        ):
            _, dropped = self._memory.popitem(last=False)
            self._bytes -= dropped.nbytes
        return batch_id

    def resolve(self, batch_id: str | None) -> str | None:
        """The batch feedback refers to: the one named, or the latest (None before any)."""
        if batch_id is None:
            return next(reversed(self._memory)) if self._memory else None
        if batch_id not in self._memory:
            raise UnknownBatchError(
                f"Unknown or expired batch_id {batch_id[:40]!r}: feedback refers to one of "
                f"the last {MEMORY_BATCHES} batches"
            )
        return batch_id

    def step(self, batch_id: str, target: list[float], reward: float) -> FeedbackStep:
        """One step of the dendrite head towards ``target`` on the batch's inputs.

        Raises :class:`InvalidFeedbackError`, no step taken, for a target out of
        bounds or a loss that is not finite.
        """
        check_adjustments(target)
        shard = self.trainer.shard
        inputs = self.trainer.staging.to_device(self._memory[batch_id])
        if reward == 0:  # nothing to learn: the loss only (AdamW's moments stay as they are)
            with torch.no_grad():
                loss = self._loss(self._prediction(inputs), target)
            return FeedbackStep(batch_id, float(loss))
        if shard is None:
            outcome = self._step(inputs, target, reward)
        else:  # every rank steps on its slice; DDP averages the head's gradients
            goal = torch.tensor([*target, reward], dtype=torch.float64, device=inputs.device)
            fields = [inputs.shape[0], inputs.shape[1] if inputs.dim() == 3 else 0]
            fields += [inputs.shape[-1], len(target)]
            with shard.leading(Op.FEEDBACK, fields, [inputs, goal], (InvalidFeedbackError,)):
                outcome = self._step(inputs, target, reward)
        return FeedbackStep(batch_id, outcome.loss, skipped=outcome.skipped)

    def follow(self, fields: list[int]) -> None:
        """A rank but 0: the feedback step rank 0 announced with ``fields``."""
        assert self.trainer.shard is not None
        size, steps, width, dim = fields[:4]
        shape = (size, steps, width) if steps else (size, width)
        inputs, goal = self.trainer.shard.receive([shape, (dim + 1,)], float64=1)
        assert inputs is not None and goal is not None
        values = goal.cpu().tolist()
        with contextlib.suppress(InvalidFeedbackError):  # rank 0 answers it
            self._step(inputs, values[:-1], values[-1])

    def _prediction(self, inputs: torch.Tensor) -> torch.Tensor:
        """The dendrite head's output on ``inputs`` (B, dendrite_dim); the body in eval mode."""
        trainer = self.trainer
        trainer.model.eval()
        try:
            with torch.no_grad(), self._mixed.autocast():
                features = trainer.model.features(inputs)  # (B, mlp_out), the heads' input
        finally:
            trainer.model.train()
        with self._mixed.autocast():
            return torch.tanh(self._head(features))

    def _loss(self, prediction: torch.Tensor, target: list[float]) -> torch.Tensor:
        goal = torch.tensor(target, dtype=torch.float32, device=prediction.device)
        with self._mixed.autocast():
            return F.mse_loss(prediction, goal.expand_as(prediction))

    def _step(self, inputs: torch.Tensor, target: list[float], reward: float) -> StepOutcome:
        trainer = self.trainer
        self._optimizer.zero_grad(set_to_none=True)
        if trainer.shard is None:
            prediction = self._prediction(inputs)
        else:  # this rank's slice, through the DDP wrap (which averages the gradients)
            with self._mixed.autocast():
                prediction, share = trainer.shard.feedback_prediction(inputs)
        loss = self._loss(prediction, target)
        if trainer.shard is not None:
            loss = trainer.shard.feedback_loss(loss, share)
        # AdamW normalises a weighted gradient away: the reward scales the rate as well, and
        # weighs this step's gradient against the others' in the optimizer's moments.
        for group in self._optimizer.param_groups:
            group["lr"] = self.lr * reward
        outcome = self._mixed.step(loss, self._optimizer, self._head.parameters(), weight=reward)
        if not math.isfinite(outcome.loss):
            raise InvalidFeedbackError(
                f"The dendrite loss of this feedback is {outcome.loss}; no step was taken"
            )
        self._optimizer.zero_grad(set_to_none=True)
        return outcome
