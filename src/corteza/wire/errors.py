"""The error contract on the wire.

Every failure is a real 4xx/5xx status with the body
``{"status": "error", "error": "<human message>", "error_type": "<code>"}``
(the seed's TypeScript client prints ``error``). ``error_type`` is one of the
constants of :class:`ErrorType`; the client maps it to an exception class.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class ErrorType(str, Enum):
    """Machine-readable failure codes."""

    DIMENSION_MISMATCH = "dimension_mismatch"
    NON_FINITE_INPUT = "non_finite_input"
    INVALID_LABEL = "invalid_label"
    EMPTY_BATCH = "empty_batch"
    RAGGED_BATCH = "ragged_batch"
    INVALID_REQUEST = "invalid_request"
    MALFORMED_BODY = "malformed_body"
    UNSUPPORTED_PROTOCOL = "unsupported_protocol"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    TRAINING_DIVERGED = "training_diverged"
    OUT_OF_MEMORY = "out_of_memory"
    OUT_OF_ORDER = "out_of_order"
    RUN_CONFLICT = "run_conflict"
    RUN_BUSY = "run_busy"
    UNKNOWN_BATCH = "unknown_batch"
    INVALID_FEEDBACK = "invalid_feedback"
    CHECKPOINTS_DISABLED = "checkpoints_disabled"
    INVALID_CHECKPOINT = "invalid_checkpoint"
    CHECKPOINT_FAILED = "checkpoint_failed"
    INTERNAL_ERROR = "internal_error"
    NOT_ACCEPTABLE = "not_acceptable"
    EXPORT_UNAVAILABLE = "export_unavailable"
    UNAUTHORIZED = "unauthorized"
    INVALID_HOST = "invalid_host"
    FORBIDDEN_ORIGIN = "forbidden_origin"
    REQUEST_TIMEOUT = "request_timeout"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    BATCH_TOO_LARGE = "batch_too_large"
    SEQUENCE_TOO_LONG = "sequence_too_long"


class ErrorBody(BaseModel):
    """Body of every error response."""

    model_config = ConfigDict(extra="allow")

    status: Literal["error"] = "error"
    error: str
    error_type: str


def error_body(message: str, error_type: ErrorType | str, **extra: Any) -> dict[str, Any]:
    """The JSON body for a failure, as a plain dict."""
    code = error_type.value if isinstance(error_type, ErrorType) else error_type
    return {"status": "error", "error": message, "error_type": code, **extra}


class BatchError(ValueError):
    """A batch that must not reach the model: bad width, NaN, bad label, empty, ragged.

    Raised by :func:`corteza.wire.validate_batch` on both sides of the wire,
    so the client's pre-flight check and the server say the same words.
    """

    def __init__(self, message: str, error_type: ErrorType, sample: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.error_type = error_type
        self.sample = sample
