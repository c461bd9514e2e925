"""CortezaCognitiva: the seed's Capa2..Capa5 network, fixed where it was broken.

The fixes against the seed: inputs may carry a time axis ``(B, T, D)`` and
Capa4 attends over it (the seed attended over a sequence of length one);
Capa3 normalises with LayerNorm, so a batch of one trains and no statistics
leak across requests; the anomaly head returns logits (the sigmoid lives in
the loss and in :func:`anomaly_probability`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from corteza.model.config import ModelConfig


class CortezaOutput(NamedTuple):
    """What one forward pass returns."""

    anomaly_logits: Tensor  # (B, 1)
    dendrites: Tensor  # (B, dendrite_dim), in [-1, 1]
    coherence: Tensor  # (B, coherence_dim), in [-1, 1]
    capa2_mean: Tensor  # () mean activation after the GMU
    capa3_mean: Tensor  # () mean activation after Capa3
    capa4_mean: Tensor  # () mean activation after Capa4


class GatedMultimodalUnit(nn.Module):
    """Fuses the BiLSTM and Transformer views of each time step.

    A scalar gate per step, computed from both views, mixes the Transformer
    output with a projection of the LSTM output to the input width.
    """

    def __init__(self, lstm_dim: int, model_dim: int, hidden: int) -> None:
        super().__init__()
        self.lstm_proj = nn.Linear(lstm_dim, model_dim)
        self.gate = nn.Sequential(
            nn.Linear(model_dim + lstm_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 1),
            nn.Sigmoid(),
        )

    def forward(self, lstm_out: Tensor, transformer_out: Tensor) -> Tensor:
        z: Tensor = self.gate(torch.cat([transformer_out, lstm_out], dim=-1))  # (B, T, 1)
        fused: Tensor = z * self.lstm_proj(lstm_out) + (1 - z) * transformer_out  # (B, T, D)
        return fused


class Capa2(nn.Module):
    """Spatio-temporal layer: BiLSTM and Transformer encoder fused by a GMU."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.lstm = nn.LSTM(
            cfg.input_dim,
            cfg.lstm_hidden,
            num_layers=cfg.lstm_layers,
            batch_first=True,
            bidirectional=True,
        )
        layer = nn.TransformerEncoderLayer(
            d_model=cfg.input_dim,
            nhead=cfg.transformer_heads,
            dim_feedforward=cfg.transformer_ff,
            dropout=cfg.dropout,
            batch_first=True,
        )
        self.transformer = nn.TransformerEncoder(
            layer, num_layers=cfg.transformer_layers, enable_nested_tensor=False
        )
        self.gmu = GatedMultimodalUnit(2 * cfg.lstm_hidden, cfg.input_dim, cfg.gmu_hidden)

    def forward(self, x: Tensor) -> Tensor:
        lstm_out, _ = self.lstm(x)  # (B, T, 2H)
        transformer_out = self.transformer(x)  # (B, T, D)
        fused: Tensor = self.gmu(lstm_out, transformer_out)  # (B, T, D)
        return fused


class Capa3(nn.Module):
    """Residual MLP applied to each time step: D -> 4096 -> 2048 -> 512, plus a skip."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        h1, h2 = cfg.mlp_hidden
        self.mlp = nn.Sequential(
            nn.Linear(cfg.input_dim, h1),
            nn.LayerNorm(h1),
            nn.ReLU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(h1, h2),
            nn.LayerNorm(h2),
            nn.ReLU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(h2, cfg.mlp_out),
        )
        self.skip = nn.Linear(cfg.input_dim, cfg.mlp_out)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.mlp(x) + self.skip(x)  # (B, T, mlp_out)
        return out


class Capa4(nn.Module):
    """Self-attention over the time axis with residual + FFN; the last step is kept."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(
            cfg.mlp_out, cfg.attention_heads, dropout=cfg.dropout, batch_first=True
        )
        # One norm shared by both residual branches, as in the seed.
        self.norm = nn.LayerNorm(cfg.mlp_out)
        self.ffn = nn.Sequential(
            nn.Linear(cfg.mlp_out, cfg.attention_ff),
            nn.ReLU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.attention_ff, cfg.mlp_out),
        )

    def forward(self, x: Tensor) -> Tensor:
        attended, _ = self.attention(x, x, x, need_weights=False)
        x = self.norm(x + attended)  # (B, T, E)
        x = self.norm(x + self.ffn(x))  # (B, T, E)
        return x[:, -1]  # (B, E)


def _head(width: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, out))


class Capa5(nn.Module):
    """Three decision heads: anomaly (logit), dendrites (tanh), coherence (tanh)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.anomaly = _head(cfg.mlp_out, cfg.head_hidden, 1)
        self.dendrites = _head(cfg.mlp_out, cfg.head_hidden, cfg.dendrite_dim)
        self.coherence = _head(cfg.mlp_out, cfg.head_hidden, cfg.coherence_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return (
            self.anomaly(x),  # (B, 1) logits
            torch.tanh(self.dendrites(x)),  # (B, dendrite_dim)
            torch.tanh(self.coherence(x)),  # (B, coherence_dim)
        )


class CortezaCognitiva(nn.Module):
    """The Corteza cognitive model.

    >>> model = CortezaCognitiva(ModelConfig.tiny())
    >>> out = model(torch.zeros(2, 32))
    >>> tuple(out.anomaly_logits.shape), tuple(out.dendrites.shape)
    ((2, 1), (2, 16))
    """

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config or ModelConfig()
        self.capa2 = Capa2(self.config)
        self.capa3 = Capa3(self.config)
        self.capa4 = Capa4(self.config)
        self.capa5 = Capa5(self.config)

    def forward(self, x: Tensor) -> CortezaOutput:
        h2, h3, h4 = self._layers(x)
        anomaly, dendrites, coherence = self.capa5(h4)
        means = (h2.mean().detach(), h3.mean().detach(), h4.mean().detach())
        return CortezaOutput(anomaly, dendrites, coherence, *means)

    def features(self, x: Tensor) -> Tensor:
        """What the decision heads see: Capa4's output, (B, mlp_out)."""
        return self._layers(x)[2]

    def _layers(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if x.dim() not in (2, 3) or x.shape[-1] != self.config.input_dim:
            raise ValueError(
                f"expected input (B, {self.config.input_dim}) or (B, T, {self.config.input_dim}),"
                f" got {tuple(x.shape)}"
            )
        if x.dim() == 2:
            x = x.unsqueeze(1)  # (B, D) -> (B, 1, D)
        h2 = self.capa2(x)  # (B, T, D)
        h3 = self.capa3(h2)  # (B, T, mlp_out)
        h4 = self.capa4(h3)  # (B, mlp_out)
        return h2, h3, h4


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those that require gradients)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def anomaly_probability(output: CortezaOutput) -> Tensor:
    """Per-sample anomaly probability, shape (B,)."""
    return torch.sigmoid(output.anomaly_logits.squeeze(-1))
