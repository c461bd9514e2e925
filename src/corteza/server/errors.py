"""Failures as real HTTP statuses with the wire's error body; tracebacks to the log only."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from corteza.wire import BatchError, ErrorType, error_body

logger = logging.getLogger(__name__)


class ApiError(Exception):
    """A failure the client should hear about: status, human message, machine code."""

    def __init__(self, status: int, message: str, error_type: ErrorType, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.extra = extra

    @classmethod
    def from_batch_error(cls, exc: BatchError) -> ApiError:
        extra = {} if exc.sample is None else {"sample": exc.sample}
        return cls(422, exc.message, exc.error_type, **extra)

    @classmethod
    def from_validation_error(cls, exc: ValidationError | RequestValidationError) -> ApiError:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            first = next(e for e in errors if e.get("type") == "json_invalid")
            reason = first.get("ctx", {}).get("error", first.get("msg", ""))
            return cls(400, f"Request body is not valid JSON: {reason}", ErrorType.MALFORMED_BODY)
        return cls(422, f"Invalid request: {describe_errors(errors)}", ErrorType.INVALID_REQUEST)


def describe_errors(errors: Any) -> str:
    """``samples.0.anomaly_label: Input should be a valid number`` (first 3 problems)."""
    parts = []
    for error in list(errors)[:3]:
        loc = [str(p) for p in error.get("loc", ()) if p != "body"]
        where = ".".join(loc) or "body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    more = len(list(errors)) - 3
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


def _response(exc: ApiError) -> JSONResponse:
    return JSONResponse(
        error_body(exc.message, exc.error_type, **exc.extra), status_code=exc.status
    )


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return _response(exc)


async def _request_validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return _response(ApiError.from_validation_error(exc))


_HTTP_CODES = {404: ErrorType.NOT_FOUND, 405: ErrorType.METHOD_NOT_ALLOWED}


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, ErrorType.INVALID_REQUEST)
    if exc.status_code >= 500:
        code = ErrorType.INTERNAL_ERROR
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    return JSONResponse(error_body(message, code), status_code=exc.status_code, headers=exc.headers)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(
        error_body(
            "Internal server error; the details are in the server log", ErrorType.INTERNAL_ERROR
        ),
        status_code=500,
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
