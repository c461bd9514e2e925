"""The client's exception tree. Every failure raises; nothing returns None.

::

    CortezaError
    ├── TransportError              the server could not be reached or answered oddly
    │   ├── ConnectError            connection refused, DNS failure, TLS failure
    │   ├── TimeoutException        no answer within the timeout (httpx's name)
    │   └── ProtocolError           not our protocol (a proxy page, a wrong URL)
    ├── ServerError                 the server answered with an error (status, error_type)
    │   ├── InvalidRequestError     4xx: the request was refused, nothing changed
    │   │   ├── InvalidBatchError   bad samples: width, NaN/Inf, labels, empty, ragged
    │   │   │   └── DimensionMismatchError
    │   │   ├── OutOfOrderError     a batch ahead of its run (exactly-once); see next_seq
    │   │   ├── NotFoundError
    │   │   ├── UnauthorizedError   401: no token, or not this server's
    │   │   ├── ForbiddenError      400/403: a Host or Origin the server does not serve
    │   │   ├── RequestTimeoutError 408: the body arrived too slowly
    │   │   └── PayloadTooLargeError 413: body, batch or sequence over the server's limit,
    │   │                               a batch the GPU's memory cannot hold, or a dataset
    │   │                               over the server's quota
    │   ├── TrainingDivergedError   the loss became NaN/Inf; the step was not applied
    │   └── InternalServerError     5xx
    └── InvalidDataError            (also ValueError) local data refused before sending

``TimeoutError``, this module's old name for :class:`TimeoutException`, shadowed
the builtin; it still works, with a :class:`DeprecationWarning`, for one release.
"""

from __future__ import annotations

import json
import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx


class CortezaError(Exception):
    """Root of every error this package raises."""


class TransportError(CortezaError):
    """The request did not get a usable answer."""


class ConnectError(TransportError):
    """The server could not be reached."""


class TimeoutException(TransportError):  # noqa: N818 - httpx's name, by design
    """The server did not answer in time (not the builtin ``TimeoutError``)."""


class ProtocolError(TransportError):
    """The answer was not from a corteza server (or an incompatible one)."""


class ServerError(CortezaError):
    """The server answered with an error status and body."""

    def __init__(
        self, message: str, *, status: int, error_type: str, body: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.error_type = error_type
        self.body = body or {}


class InvalidRequestError(ServerError):
    """A 4xx: the server refused the request and changed nothing."""


class InvalidBatchError(InvalidRequestError):
    """A sample was refused (width, NaN/Inf, label, empty or ragged batch)."""

    @property
    def sample(self) -> int | None:
        value = self.body.get("sample")
        return value if isinstance(value, int) else None


class DimensionMismatchError(InvalidBatchError):
    """``Input dimension mismatch: expected 1600D, got 3D``."""


class OutOfOrderError(InvalidRequestError):
    """A batch ahead of its run: resume at :attr:`next_seq`."""

    @property
    def next_seq(self) -> int | None:
        value = self.body.get("next_seq")
        return value if isinstance(value, int) else None


class NotFoundError(InvalidRequestError):
    """The route or resource does not exist."""


class UnauthorizedError(InvalidRequestError):
    """401: the server needs a token, or refused the one sent."""

    HINT = "pass --token TOKEN or run `corteza connect URL --token TOKEN`"

    def __str__(self) -> str:
        return f"{self.message} ({self.HINT})"


class ForbiddenError(InvalidRequestError):
    """The server refused the request's Host name (400) or Origin (403)."""


class RequestTimeoutError(InvalidRequestError):
    """408: the request body arrived too slowly and was cut off."""


class PayloadTooLargeError(InvalidRequestError):
    """413: the body, the batch or a sequence is over the server's limit."""


class TrainingDivergedError(ServerError):
    """The loss became NaN or Inf; that step was not applied."""


class InternalServerError(ServerError):
    """A 5xx: the server failed; details are in its log."""


class InvalidDataError(CortezaError, ValueError):
    """Local data refused before anything was sent (same words as the server)."""

    def __init__(self, message: str, *, error_type: str, sample: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.error_type = error_type
        self.sample = sample


_BY_TYPE: dict[str, type[ServerError]] = {
    "dimension_mismatch": DimensionMismatchError,
    "non_finite_input": InvalidBatchError,
    "invalid_label": InvalidBatchError,
    "empty_batch": InvalidBatchError,
    "ragged_batch": InvalidBatchError,
    "not_found": NotFoundError,
    "unknown_batch": NotFoundError,
    "out_of_order": OutOfOrderError,
    "training_diverged": TrainingDivergedError,
    "internal_error": InternalServerError,
    "unauthorized": UnauthorizedError,
    "invalid_host": ForbiddenError,
    "forbidden_origin": ForbiddenError,
    "request_timeout": RequestTimeoutError,
    "payload_too_large": PayloadTooLargeError,
    "batch_too_large": PayloadTooLargeError,
    "sequence_too_long": PayloadTooLargeError,
    "out_of_memory": PayloadTooLargeError,
    "quota_exceeded": PayloadTooLargeError,
}


def parse_error(status: int, body: Any) -> ServerError:
    """The exception for an error response (``body`` is the decoded JSON, or anything)."""
    data = body if isinstance(body, dict) else {}
    error_type = str(data.get("error_type") or ("internal_error" if status >= 500 else "unknown"))
    message = str(data.get("error") or data.get("detail") or f"HTTP {status}")
    cls = _BY_TYPE.get(error_type)
    if cls is None:
        cls = InternalServerError if status >= 500 else InvalidRequestError
    return cls(message, status=status, error_type=error_type, body=data)


def raise_for_error(response: httpx.Response) -> None:
    """Raise the typed exception of an error answer (its body read); nothing for a success."""
    if response.is_error:
        try:
            body = json.loads(response.content)
        except ValueError:
            body = None
        raise parse_error(response.status_code, body)


def __getattr__(name: str) -> Any:
    """``TimeoutError``: the deprecated name of :class:`TimeoutException` (PEP 562)."""
    if name == "TimeoutError":
        warnings.warn(
            "corteza.client.errors.TimeoutError is deprecated (it shadows the builtin): "
            "use TimeoutException",
            DeprecationWarning,
            stacklevel=2,
        )
        return TimeoutException
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
