"""Bytes <-> objects: payload schemas, the error contract, validation, protocol version.

No torch, httpx or FastAPI here: both sides of the wire import this package.
"""

from corteza.wire.errors import BatchError, ErrorBody, ErrorType, error_body
from corteza.wire.schemas import (
    CapaInfo,
    DiagnosticResponse,
    FeedbackRequest,
    FeedbackResponse,
    FeedbackStats,
    GpuInfo,
    HealthResponse,
    InfoResponse,
    MetricsResponse,
    Outputs,
    OutputShapes,
    Sample,
    Statistics,
    StatusResponse,
    TrainRequest,
    TrainResponse,
)
from corteza.wire.validation import (
    MAX_EPOCHS_PER_BATCH,
    Batch,
    batch_from_rows,
    dimension_mismatch,
    validate_batch,
)
from corteza.wire.version import PROTOCOL_HEADER, PROTOCOL_VERSION

__all__ = [
    "MAX_EPOCHS_PER_BATCH",
    "PROTOCOL_HEADER",
    "PROTOCOL_VERSION",
    "Batch",
    "BatchError",
    "CapaInfo",
    "DiagnosticResponse",
    "ErrorBody",
    "ErrorType",
    "FeedbackRequest",
    "FeedbackResponse",
    "FeedbackStats",
    "GpuInfo",
    "HealthResponse",
    "InfoResponse",
    "MetricsResponse",
    "OutputShapes",
    "Outputs",
    "Sample",
    "Statistics",
    "StatusResponse",
    "TrainRequest",
    "TrainResponse",
    "batch_from_rows",
    "dimension_mismatch",
    "error_body",
    "validate_batch",
]
