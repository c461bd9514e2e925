"""The Corteza cognitive model: configuration, network and losses (pure torch)."""

from corteza.model.config import PRESETS, ModelConfig
from corteza.model.losses import LossTerms, LossWeights, corteza_loss
from corteza.model.network import (
    CortezaCognitiva,
    CortezaOutput,
    anomaly_probability,
    count_parameters,
)

__all__ = [
    "PRESETS",
    "CortezaCognitiva",
    "CortezaOutput",
    "LossTerms",
    "LossWeights",
    "ModelConfig",
    "anomaly_probability",
    "corteza_loss",
    "count_parameters",
]
