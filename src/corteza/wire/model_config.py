"""The model's widths, as one frozen dataclass stored beside every checkpoint (torch-free)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class ModelConfig:
    """Every width of :class:`corteza.model.CortezaCognitiva`.

    The defaults reproduce the seed's architecture exactly (73,766,290
    parameters). ``ModelConfig.tiny()`` builds a model of a few thousand
    parameters for fast tests.
    """

    input_dim: int = 1600  # D: width of one time step of input
    lstm_hidden: int = 512  # Capa2a: hidden units per direction of the BiLSTM
    lstm_layers: int = 2  # Capa2a: stacked BiLSTM layers
    transformer_heads: int = 8  # Capa2b: attention heads (must divide input_dim)
    transformer_layers: int = 2  # Capa2b: encoder layers
    transformer_ff: int = 2048  # Capa2b: feed-forward width inside each encoder layer
    gmu_hidden: int = 1600  # GMU: hidden width of the gate network
    mlp_hidden: tuple[int, int] = (4096, 2048)  # Capa3: the two hidden widths
    mlp_out: int = 512  # Capa3 output width, also Capa4's model width
    attention_heads: int = 4  # Capa4: self-attention heads (must divide mlp_out)
    attention_ff: int = 1024  # Capa4: feed-forward width
    head_hidden: int = 256  # Capa5: hidden width of each decision head
    dendrite_dim: int = 16  # Capa5: dendrite adjustments (tanh)
    coherence_dim: int = 64  # Capa5: coherence state (tanh)
    dropout: float = 0.1  # dropout in Capa2b, Capa3 and Capa4

    def __post_init__(self) -> None:
        # JSON gives lists; keep the dataclass hashable and comparable.
        object.__setattr__(self, "mlp_hidden", tuple(self.mlp_hidden))
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "dropout":
                if not 0.0 <= value < 1.0:
                    raise ValueError(f"dropout must be in [0, 1), got {value}")
            elif f.name == "mlp_hidden":
                if len(value) != 2 or any(int(v) < 1 for v in value):
                    raise ValueError(f"mlp_hidden must be two positive widths, got {value}")
            elif int(value) < 1:
                raise ValueError(f"{f.name} must be a positive integer, got {value}")
        if self.input_dim % self.transformer_heads:
            raise ValueError(
                f"transformer_heads ({self.transformer_heads}) must divide "
                f"input_dim ({self.input_dim})"
            )
        if self.mlp_out % self.attention_heads:
            raise ValueError(
                f"attention_heads ({self.attention_heads}) must divide mlp_out ({self.mlp_out})"
            )

    @classmethod
    def tiny(cls, input_dim: int = 32) -> ModelConfig:
        """A model of a few thousand parameters with the seed's head widths."""
        return cls(
            input_dim=input_dim,
            lstm_hidden=16,
            lstm_layers=1,
            transformer_heads=2,
            transformer_layers=1,
            transformer_ff=32,
            gmu_hidden=32,
            mlp_hidden=(64, 32),
            mlp_out=16,
            attention_heads=2,
            attention_ff=32,
            head_hidden=16,
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mlp_hidden"] = list(self.mlp_hidden)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model config fields: {', '.join(unknown)}")
        return cls(**data)


PRESETS: dict[str, ModelConfig] = {
    "default": ModelConfig(),
    "tiny": ModelConfig.tiny(),
}
