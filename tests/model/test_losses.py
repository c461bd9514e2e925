"""The loss: BCE on the anomaly logit, MSE on heads only for samples with targets."""

from __future__ import annotations

import math

import torch

from corteza.model import CortezaOutput, LossWeights, corteza_loss


def _output(logits: list[float], dendrites: torch.Tensor | None = None) -> CortezaOutput:
    b = len(logits)
    zero = torch.tensor(0.0)
    return CortezaOutput(
        torch.tensor(logits).unsqueeze(-1),
        dendrites if dendrites is not None else torch.zeros(b, 16),
        torch.zeros(b, 64),
        zero,
        zero,
        zero,
    )


def test_anomaly_loss_is_bce_with_logits() -> None:
    terms = corteza_loss(_output([0.0, 0.0]), torch.tensor([0.0, 1.0]))
    assert math.isclose(terms.total.item(), math.log(2), rel_tol=1e-6)
    assert terms.dendrite is None
    assert terms.coherence is None


def test_head_targets_count_only_where_present() -> None:
    target = torch.full((2, 16), float("nan"))
    target[1] = 0.5
    terms = corteza_loss(
        _output([0.0, 0.0]),
        torch.tensor([0.0, 1.0]),
        dendrite_target=target,
        weights=LossWeights(dendrite=2.0),
    )
    assert terms.dendrite is not None
    assert math.isclose(terms.dendrite.item(), 0.25, rel_tol=1e-6)
    assert math.isclose(terms.total.item(), math.log(2) + 0.5, rel_tol=1e-6)


def test_all_nan_targets_are_ignored() -> None:
    target = torch.full((2, 64), float("nan"))
    terms = corteza_loss(_output([1.0, -1.0]), torch.tensor([1.0, 0.0]), coherence_target=target)
    assert terms.coherence is None
