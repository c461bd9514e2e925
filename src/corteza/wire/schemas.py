"""JSON payloads of the seed's routes (field names byte-for-byte) plus our additions.

The seed's TypeScript client reads the Spanish field names; fields we add
are English. Every response model allows extra fields so a newer server
never breaks an older client.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from corteza.wire.validation import MAX_EPOCHS_PER_BATCH


class _Payload(BaseModel):
    model_config = ConfigDict(extra="allow")


# ---------------------------------------------------------------- requests


class Sample(BaseModel):
    """One training sample in the seed's JSON format."""

    input_data: list[float] | list[list[float]] = Field(
        description="D floats, or T lists of D floats for a sequence"
    )
    anomaly_label: float = Field(description="0 (normal) or 1 (anomaly)")
    dendrite_target: list[float] | None = Field(
        default=None, description="optional regression target of the dendrite head (16)"
    )
    coherence_target: list[float] | None = Field(
        default=None, description="optional regression target of the coherence head (64)"
    )


class TrainRequest(BaseModel):
    """Body of ``POST /train_layer2``."""

    samples: list[Sample]
    epochs: int = Field(
        default=1,
        ge=1,
        le=MAX_EPOCHS_PER_BATCH,
        description="optimizer steps taken on this batch",
    )
    run_id: str | None = Field(default=None, description="with seq: apply exactly once")
    seq: int | None = Field(default=None, ge=0, description="the batch's number in its run")


class FeedbackRequest(BaseModel):
    """Body of ``POST /feedback_dendritas``."""

    ajustes_aplicados: list[float] = Field(description="dendrite adjustments (16 floats)")
    validacion: bool = Field(description="whether the adjustments were validated")
    timestamp: str | None = None
    batch_id: str | None = Field(
        default=None, description="the trained batch it refers to; the latest when absent"
    )
    reward: float = Field(default=1.0, ge=0.0, le=1.0, description="weight of the feedback step")


class PredictRequest(BaseModel):
    """Body of ``POST /v1/predict``."""

    inputs: list[list[float]] | list[list[list[float]]] = Field(
        description="B rows of D floats, or B sequences of T rows of D floats"
    )


# ---------------------------------------------------------------- responses


class Outputs(_Payload):
    anomaly_prob: float
    dendrite_adjustments: list[float]
    coherence_state: list[float]


class CapaInfo(_Payload):
    capa2_activations: float
    capa3_activations: float
    capa4_activations: float


class TrainResponse(_Payload):
    status: Literal["trained", "skipped"] = Field(
        default="trained", description="skipped: fp16's loss scaler skipped every step"
    )
    loss: float
    batch_size: int
    outputs: Outputs
    capa_info: CapaInfo
    timestamp: str
    # additions
    step: int = Field(description="optimizer steps taken since the run began")
    epochs: int
    losses: list[float] = Field(description="loss of each optimizer step on this batch")
    duration_seconds: float
    run_id: str | None = None
    seq: int | None = None
    replayed: bool = Field(default=False, description="already applied: not trained again")
    batch_id: str | None = Field(default=None, description="refer to it in feedback")
    head_losses: dict[str, float | None] | None = Field(
        default=None, description="anomaly / dendrite / coherence loss of the last step"
    )
    skipped_steps: int = Field(
        default=0, description="fp16 steps skipped on overflowing gradients: not applied"
    )


class FeedbackStats(_Payload):
    recibido: int
    exitoso: int
    tasa_exito: float
    # additions
    dendrite_loss: float | None = Field(
        default=None, description="MSE of the dendrite head on the last validated feedback"
    )


class Statistics(_Payload):
    total_muestras: int
    total_batches: int
    loss_promedio_global: float
    loss_promedio_ultimos_100: float
    anomalia_media: float
    tiempo_transcurrido_seg: float
    dispositivo: str
    gpu_memoria_mb: float
    feedback: FeedbackStats
    # additions
    step: int
    samples_per_second: float
    best_loss: float | None
    last_loss: float | None
    device: str
    device_name: str
    gpu_memory_reserved_mb: float
    precision: str | None = Field(default=None, description="fp32, fp16 or bf16")
    peak_memory_mb: float = Field(default=0.0, description="peak GPU allocation (0 off CUDA)")


class FeedbackResponse(_Payload):
    status: Literal["feedback_recibido"] = "feedback_recibido"
    validacion: bool
    timestamp: str
    estadisticas: Statistics
    # additions
    batch_id: str | None = None
    applied: bool = Field(default=False, description="a step was taken on the dendrite head")
    dendrite_loss: float | None = Field(default=None, description="MSE before the step")


class StatusResponse(_Payload):
    status: Literal["online"] = "online"
    modelo: str
    estadisticas: Statistics
    torch_version: str
    cuda_available: bool
    # additions
    version: str
    protocol: str
    queue_depth: int


class HealthResponse(_Payload):
    alive: bool
    timestamp: str
    uptime_seconds: float


class Arquitectura(_Payload):
    capas: dict[str, object]
    parametros_totales: int
    parametros_entrenables: int


class CheckpointSaved(_Payload):
    """``POST /v1/checkpoint``: the checkpoint just saved and the runs it holds."""

    status: Literal["saved"] = "saved"
    checkpoint: str
    step: int
    runs: dict[str, int]  # run_id -> next_seq


class ServerLimits(_Payload):
    """What one request may hold on this server, so a client can refuse before sending."""

    max_batch_samples: int
    max_seq_len: int


class InfoResponse(_Payload):
    nombre: str
    version: str
    arquitectura: Arquitectura
    flujo: dict[str, object]
    # additions
    input_dim: int
    model_config_: dict[str, object] = Field(alias="model_config")
    protocol: str
    limits: ServerLimits | None = None  # None: a server from before the field


class OutputShapes(_Payload):
    anomaly: list[int]
    dendrites: list[int]
    coherence: list[int]


class GpuInfo(_Payload):
    cuda: bool
    device: str


class DiagnosticResponse(_Payload):
    status: Literal["diagnostico_ok"] = "diagnostico_ok"
    test_input_shape: list[int]
    outputs_shapes: OutputShapes
    gpu_info: GpuInfo


class MetricsResponse(_Payload):
    ultimos_20_losses: list[float]
    tendencia: Literal["mejorando", "empeorando", "estable", "sin_datos"]
    anomalias_detectadas: int
    feedback_tasa_exito: float
    # additions
    feedback_received: int = 0
    dendrite_loss: float | None = None
    slope: float | None = Field(description="least-squares slope of loss per batch")
    window: int


class PredictResponse(_Payload):
    """Per-sample outputs of the model in eval mode."""

    anomaly_prob: list[float]
    dendrites: list[list[float]]
    coherence: list[list[float]]
    count: int
