"""The error contract on the wire.

Every failure is a real 4xx/5xx status with the body
``{"status": "error", "error": "<human message>", "error_type": "<code>"}``
(the seed's TypeScript client prints ``error``). ``error_type`` is one of the
constants of :class:`ErrorType`; the client maps it to an exception class.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
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
    HASH_MISMATCH = "hash_mismatch"
    QUOTA_EXCEEDED = "quota_exceeded"
    INSUFFICIENT_STORAGE = "insufficient_storage"
    UPLOAD_CONFLICT = "upload_conflict"
    # A data file refused (wire.data_files): the client's own words, now the server's too.
    INVALID_DATA = "invalid_data"
    EMPTY_DATA = "empty_data"
    RAGGED_DATA = "ragged_data"
    UNKNOWN_FORMAT = "unknown_format"


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


class DataFileError(ValueError):
    """A data file that is not a dataset: unreadable, malformed, ragged, empty, bad values.

    Raised by :mod:`corteza.wire.data_files` on both sides: the client raises it
    again as its ``InvalidDataError``, the server answers it with a 422.
    ``error_type`` is ``invalid_data``, ``empty_data``, ``ragged_data``,
    ``unknown_format``, ``file_not_found``, ``non_finite_input`` or ``invalid_label``.
    """

    def __init__(self, message: str, *, error_type: str, sample: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.error_type = error_type
        self.sample = sample


def invalid_data(detail: str, *, sample: int | None = None) -> DataFileError:
    """A file or sample that is not data (``Malformed data: ...``)."""
    return DataFileError(f"Malformed data: {detail}", error_type="invalid_data", sample=sample)


def empty_data(path: Path) -> DataFileError:
    return DataFileError(f"Empty data: {path} has no samples", error_type="empty_data")


def invalid_label(i: int, value: str) -> DataFileError:
    """The words of :func:`corteza.wire.validation.validate_batch`."""
    return DataFileError(
        f"Invalid anomaly_label: sample {i} has {value}, expected 0 or 1",
        error_type="invalid_label",
        sample=i,
    )
