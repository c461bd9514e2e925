"""Bytes <-> objects: payload schemas, the error contract, validation, protocol version.

No torch, httpx or FastAPI here: both sides of the wire import this package.
"""

from corteza.wire.binary import (
    BATCH_CONTENT_TYPE,
    DecodedBatch,
    WireDtype,
    decode_batch,
    encode_batch,
)
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
    PredictRequest,
    PredictResponse,
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
    inputs_from_rows,
    targets_from_rows,
    validate_batch,
    validate_inputs,
)
from corteza.wire.version import PROTOCOL_HEADER, PROTOCOL_VERSION

__all__ = [
    "BATCH_CONTENT_TYPE",
    "MAX_EPOCHS_PER_BATCH",
    "PROTOCOL_HEADER",
    "PROTOCOL_VERSION",
    "Batch",
    "BatchError",
    "CapaInfo",
    "DecodedBatch",
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
    "PredictRequest",
    "PredictResponse",
    "Sample",
    "Statistics",
    "StatusResponse",
    "TrainRequest",
    "TrainResponse",
    "WireDtype",
    "batch_from_rows",
    "decode_batch",
    "dimension_mismatch",
    "encode_batch",
    "error_body",
    "inputs_from_rows",
    "targets_from_rows",
    "validate_batch",
    "validate_inputs",
]
