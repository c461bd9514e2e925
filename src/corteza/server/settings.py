"""Server configuration: one typed, validated ``Settings`` (env prefix ``CORTEZA_``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from corteza.model import ModelConfig
from corteza.server.edge.policy import exposure_problem

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

    host: str = Field(default=DEFAULT_HOST, description="interface to bind")
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535, description="TCP port")
    device: str = Field(
        default="auto", description="where the model runs: auto, cpu, cuda, cuda:N or mps"
    )
    seed: int | None = Field(default=0, description="torch seed; None leaves torch unseeded")
    lr: float = Field(default=1e-4, gt=0, description="AdamW learning rate")
    weight_decay: float = Field(default=0.0, ge=0)
    loss_weight_anomaly: float = Field(default=1.0, ge=0, description="weight of the BCE term")
    loss_weight_dendrite: float = Field(default=1.0, ge=0, description="of dendrite targets")
    loss_weight_coherence: float = Field(default=1.0, ge=0, description="of coherence targets")
    feedback_lr: float = Field(default=1e-3, gt=0, description="AdamW rate of feedback steps")
    max_grad_norm: float | None = Field(default=1.0, gt=0)
    pos_weight: float | None = Field(default=None, gt=0, description="BCE weight of anomalies")
    precision: Literal["auto", "fp32", "fp16", "bf16"] = Field(
        default="auto",
        description="training precision; auto: bf16 from compute capability 8.0, fp16 with a "
        "loss scaler on 7.x (T4, V100), fp32 on the CPU; one the device cannot honour is refused",
    )
    compile: bool = Field(
        default=False, description="compile the training forward pass (eager on failure)"
    )
    compile_mode: Literal[
        "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"
    ] = Field(default="default", description="mode of torch.compile, with --compile")
    trend_window: int = Field(default=20, ge=3, description="losses in the /metricas slope")
    checkpoint_dir: Path | None = Field(
        default=None,
        description="save checkpoints here and resume from the newest on start "
        "(e.g. a mounted Google Drive on Colab)",
    )
    data_dir: Path | None = Field(
        default=None,
        description="keep uploaded datasets here (default: CHECKPOINT_DIR/datasets, else "
        "~/.cache/corteza/datasets)",
    )
    max_data_gb: float = Field(default=20.0, gt=0, description="quota (GB) of uploaded datasets")
    checkpoint_every: int = Field(default=1000, ge=1, description="batches between checkpoints")
    checkpoint_seconds: float = Field(
        default=120.0,
        gt=0,
        description="seconds between checkpoints, whichever comes first (a save takes ~5 s on "
        "2 CPUs)",
    )
    checkpoint_keep: int = Field(default=3, ge=1, description="checkpoints kept")
    stream_window: int = Field(default=16, ge=1, le=256, description="largest window granted")
    runs_keep: int = Field(
        default=256, ge=0, description="runs not in use remembered for resuming (newest first)"
    )
    runs_keep_hours: float = Field(
        default=168.0, gt=0, description="how long a run not in use is remembered"
    )
    # Observability (see corteza.server.observe.events and corteza.server.observe.webhooks).
    webhooks: list[str] = Field(
        default_factory=list, description="http(s) URLs told of news; fixed at start"
    )
    webhook_secret: SecretStr | None = Field(
        default=None, description="sign deliveries with HMAC-SHA256 (X-Corteza-Signature)"
    )
    webhook_format: Literal["json", "slack"] = Field(
        default="json",
        description="body of deliveries: json (the event) or slack ({'text': one line})",
    )
    notify_loss_below: float | None = Field(
        default=None, description="announce when the loss first drops below this"
    )
    notify_margin: float = Field(
        default=0.01,
        ge=0,
        lt=1,
        description="announce a best loss this much (relative) below the last",
    )
    stall_minutes: float = Field(
        default=10.0, gt=0, description="announce a stall after this long without a batch"
    )
    distributed_heartbeat_s: float = Field(
        default=30.0,
        gt=0,
        description="under torch.distributed: rank 0 tells the other ranks it lives this often",
    )
    distributed_timeout_s: float = Field(
        default=1800.0,
        gt=0,
        description="under torch.distributed: the longest wait of a collective; a rank that "
        "hears nothing for this long gives up and torchrun restarts the group",
    )
    log_level: str = Field(
        default="info", description="log verbosity: debug, info, warning or error"
    )
    model: ModelConfig = Field(default_factory=ModelConfig)
    # Security (see corteza.server.edge.policy): who may call, and how much they may send.
    token: str | None = Field(
        default=None, repr=False, description="bearer token; None = no auth (loopback only)"
    )
    public: bool = Field(default=False, description="a tunnel exposes the server")
    allowed_hosts: list[str] = Field(
        default_factory=list, description="Host names beyond loopback and the bind address"
    )
    cors_origins: list[str] = Field(default_factory=list, description="web pages allowed (CORS)")
    max_body_mb: float = Field(
        default=64.0, gt=0, description="body cap (MiB) of batches and checkpoint chunks"
    )
    max_small_body_kb: float = Field(
        default=1024.0, gt=0, description="body cap (KiB) of every other route"
    )
    body_timeout_s: float = Field(default=30.0, gt=0, description="longest wait for body data")
    body_min_rate_kb: float = Field(
        default=16.0, ge=0, description="KB/s a body must average after body_timeout_s"
    )
    max_batch_samples: int = Field(default=4096, ge=1, description="samples per batch")
    max_seq_len: int = Field(default=1024, ge=1, description="time steps per sample")
    ws_max_frame_mb: float = Field(default=64.0, gt=0, description="largest WebSocket message")
    max_connections: int = Field(
        default=64,
        ge=1,
        description="requests and streams served at once, after the token check; more get "
        "503 (/health always answers)",
    )
    keep_alive_s: int = Field(default=5, ge=1, description="idle keep-alive connection timeout")
    header_timeout_s: float = Field(
        default=10.0, gt=0, description="seconds a connection has to send a request's head"
    )
    max_idle_per_client: int = Field(
        default=8,
        ge=1,
        description="connections without a request in progress kept per client address; a "
        "new one closes the oldest",
    )
    stream_idle_s: float = Field(
        default=600.0,
        gt=0,
        description="a training stream with no batch for this long is closed",
    )

    @field_validator("webhooks")
    @classmethod
    def _webhook_urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            scheme, _, rest = url.partition("://")
            host = rest.split("/", 1)[0].rsplit("@", 1)[-1]
            if scheme.lower() not in ("http", "https") or not host or any(c.isspace() for c in url):
                raise ValueError(
                    f"webhook URL must be http:// or https:// with a host, got {url!r}"
                )
        return urls

    @property
    def data_root(self) -> Path:
        """Where datasets live: ``data_dir``, beside the checkpoints, or the user's cache."""
        if self.data_dir is not None:
            return self.data_dir
        if self.checkpoint_dir is not None:
            return self.checkpoint_dir / "datasets"
        cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(cache) / "corteza" / "datasets"

    @property
    def data_root_chosen(self) -> bool:
        """The data folder is this server's (``data_dir`` or beside its checkpoints), not the
        user's cache every server without either shares."""
        return self.data_dir is not None or self.checkpoint_dir is not None

    @model_validator(mode="after")
    def _heartbeat_within_timeout(self) -> Settings:
        if self.distributed_heartbeat_s >= self.distributed_timeout_s:
            raise ValueError(
                f"distributed_heartbeat_s ({self.distributed_heartbeat_s:g}) must be shorter "
                f"than distributed_timeout_s ({self.distributed_timeout_s:g})"
            )
        return self

    @model_validator(mode="after")
    def _not_left_open(self) -> Settings:
        problem = exposure_problem(
            self.host, public=self.public, token=self.token, cors_origins=self.cors_origins
        )
        if problem is not None:
            raise ValueError(problem)
        return self
