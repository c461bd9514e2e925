"""Failures as real HTTP statuses with the wire's error body; tracebacks to the log only."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corteza.wire import BatchError, ErrorType, error_body

logger = logging.getLogger(__name__)

POLICY_VIOLATION = 1008  # WebSocket close code
# A body that cannot be read at all is a 400, like invalid JSON; bad content is a 422.
UNREADABLE = frozenset({ErrorType.MALFORMED_BODY, ErrorType.UNSUPPORTED_PROTOCOL})


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
        """400 for a body that cannot be read at all (:data:`UNREADABLE`), else 422 with
        the offending ``sample`` when the error names one."""
        status = 400 if exc.error_type in UNREADABLE else 422
        extra = {} if exc.sample is None else {"sample": exc.sample}
        return cls(status, exc.message, exc.error_type, **extra)

    @classmethod
    def from_validation_error(cls, exc: ValidationError | RequestValidationError) -> ApiError:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            first = next(e for e in errors if e.get("type") == "json_invalid")
            reason = first.get("ctx", {}).get("error", first.get("msg", ""))
            return cls(400, f"Request body is not valid JSON: {reason}", ErrorType.MALFORMED_BODY)
        return cls(422, f"Invalid request: {describe_errors(errors)}", ErrorType.INVALID_REQUEST)


def describe_errors(errors: Any) -> str:
    """``samples.0.anomaly_label: Field required`` for the first three distinct problems."""
    parts: list[str] = []
    for error in errors:
        # Drop "body" and the union-branch tags pydantic adds ("list[float]").
        loc = [str(p) for p in error.get("loc", ()) if p != "body" and "[" not in str(p)]
        part = f"{'.'.join(loc) or 'body'}: {error.get('msg', 'invalid')}"
        if part not in parts:
            parts.append(part)
    shown = "; ".join(parts[:3])
    return shown if len(parts) <= 3 else f"{shown}; and {len(parts) - 3} more"


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


async def send_error(
    scope: Scope,
    send: Send,
    status: int,
    message: str,
    error_type: ErrorType,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    """Answer with the wire's error body and close the connection.

    A WebSocket handshake is refused with close code 1008 and the message as
    reason (servers answer it with HTTP 403). The ASGI denial-response extension
    would carry the body, but uvicorn's default WebSocket protocol logs an error
    for every such refusal; the Python client learns the reason from the REST
    fallback it then takes.
    """
    if scope["type"] == "websocket":
        reason = message.encode()[:123].decode(errors="ignore")  # a close frame's limit
        await send({"type": "websocket.close", "code": POLICY_VIOLATION, "reason": reason})
        return
    body = json.dumps(error_body(message, error_type)).encode()
    head = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        *headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


INTERNAL_MESSAGE = "Internal server error; the details are in the server log"


class UnexpectedErrorMiddleware:
    """Turns any unhandled exception into a plain 500; the traceback goes to the log.

    Starlette's own last-resort handler re-raises after answering, which makes
    uvicorn drop the connection; this one contains the failure.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except ClientDisconnect:  # the client left mid-body: nobody to answer, nothing broken
            logger.warning(
                "client left before its request body was read: %s %s",
                scope.get("method"),
                scope.get("path"),
            )
        except Exception:
            logger.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if started:  # too late for a status; close the response as it stands
                raise
            response = JSONResponse(
                error_body(INTERNAL_MESSAGE, ErrorType.INTERNAL_ERROR), status_code=500
            )
            await response(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(StarletteHTTPException, _http_error)
