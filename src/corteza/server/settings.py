"""Server configuration: one typed, validated ``Settings`` (env prefix ``CORTEZA_``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from corteza.model import ModelConfig

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


class Settings(BaseSettings):
    """Everything the server needs to start.

    >>> Settings(model=ModelConfig.tiny(), lr=1e-3).port
    8000
    """

    model_config = SettingsConfigDict(
        env_prefix="CORTEZA_", env_nested_delimiter="__", extra="forbid"
    )

    host: str = DEFAULT_HOST
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)
    device: str = Field(default="auto", description="auto, cpu, cuda, cuda:N or mps")
    seed: int | None = Field(default=0, description="torch seed; None leaves torch unseeded")
    lr: float = Field(default=1e-4, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    loss_weight_anomaly: float = Field(default=1.0, ge=0, description="weight of the BCE term")
    loss_weight_dendrite: float = Field(default=1.0, ge=0, description="of dendrite targets")
    loss_weight_coherence: float = Field(default=1.0, ge=0, description="of coherence targets")
    feedback_lr: float = Field(default=1e-3, gt=0, description="AdamW rate of feedback steps")
    max_grad_norm: float | None = Field(default=1.0, gt=0)
    pos_weight: float | None = Field(default=None, gt=0, description="BCE weight of anomalies")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto", description="auto = bf16 autocast on a CUDA device that supports it"
    )
    trend_window: int = Field(default=20, ge=3, description="losses in the /metricas slope")
    checkpoint_dir: Path | None = Field(
        default=None, description="where checkpoints go (a mounted Google Drive on Colab)"
    )
    checkpoint_every: int = Field(default=1000, ge=1, description="batches between checkpoints")
    checkpoint_seconds: float = Field(
        default=120.0, gt=0, description="seconds between them (a save takes ~5 s on 2 CPUs)"
    )
    checkpoint_keep: int = Field(default=3, ge=1, description="checkpoints kept")
    stream_window: int = Field(default=16, ge=1, le=256, description="largest window granted")
    log_level: str = "info"
    model: ModelConfig = Field(default_factory=ModelConfig)
