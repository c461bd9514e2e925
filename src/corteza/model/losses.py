"""Training losses: BCE on the anomaly logit, MSE on heads that carry targets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from corteza.model.network import CortezaOutput


@dataclass(frozen=True)
class LossWeights:
    """How much each head contributes to the total loss."""

    anomaly: float = 1.0
    dendrite: float = 1.0
    coherence: float = 1.0


class LossTerms(NamedTuple):
    total: Tensor  # () the quantity the optimizer minimises
    anomaly: Tensor  # () BCE-with-logits
    dendrite: Tensor | None  # () MSE, None when no sample carried a target
    coherence: Tensor | None  # () MSE, None when no sample carried a target


def corteza_loss(
    output: CortezaOutput,
    labels: Tensor,
    *,
    dendrite_target: Tensor | None = None,
    coherence_target: Tensor | None = None,
    weights: LossWeights = LossWeights(),
    pos_weight: float | None = None,
) -> LossTerms:
    """Loss of one forward pass.

    ``labels`` is ``(B,)`` of 0/1; targets are ``(B, 16)`` / ``(B, 64)`` and
    may hold NaN rows for samples without a target (those rows are ignored).
    """
    logits = output.anomaly_logits.squeeze(-1)  # (B,)
    pw = None if pos_weight is None else torch.tensor(pos_weight, device=logits.device)
    anomaly = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), pos_weight=pw)
    total = weights.anomaly * anomaly
    dendrite = _masked_mse(output.dendrites, dendrite_target)
    if dendrite is not None:
        total = total + weights.dendrite * dendrite
    coherence = _masked_mse(output.coherence, coherence_target)
    if coherence is not None:
        total = total + weights.coherence * coherence
    return LossTerms(total, anomaly, dendrite, coherence)


def _masked_mse(prediction: Tensor, target: Tensor | None) -> Tensor | None:
    if target is None:
        return None
    rows = ~torch.isnan(target).any(dim=-1)  # (B,) samples that carry a target
    if not bool(rows.any()):
        return None
    return F.mse_loss(prediction[rows], target[rows].to(prediction.dtype))
