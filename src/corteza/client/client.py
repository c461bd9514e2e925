"""``Client``: the synchronous Python client of a corteza server, on httpx."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import Any, TypeVar

import httpx
import numpy as np
from numpy.typing import ArrayLike
from pydantic import BaseModel, ValidationError

from corteza._version import __version__
from corteza.client.config import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    resolve_token,
    resolve_url,
)
from corteza.client.errors import (
    ConnectError,
    ProtocolError,
    TimeoutError,
    parse_error,
)
from corteza.wire import (
    DiagnosticResponse,
    FeedbackResponse,
    HealthResponse,
    InfoResponse,
    MetricsResponse,
    StatusResponse,
    TrainResponse,
)

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

RETRY_STATUSES = frozenset({502, 503, 504})
BACKOFF_BASE = 0.25  # seconds; doubled on each retry


class Client:
    """Talks to one corteza server.

    >>> with Client("http://127.0.0.1:8000") as client:  # doctest: +SKIP
    ...     client.health().alive
    True

    The URL comes from the argument, then ``CORTEZA_URL``, then the seed's
    ``COLAB_SERVER_URL``; the token from the argument, then ``CORTEZA_TOKEN``.
    Idempotent calls are retried with backoff on connection errors and on
    502/503/504; training is not retried (it would train twice).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = resolve_url(url)
        self.retries = retries
        headers = {"User-Agent": f"corteza/{__version__}"}
        token = resolve_token(token)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=DEFAULT_CONNECT_TIMEOUT),
            transport=transport,
        )

    # -- plumbing -------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, method: str, path: str, *, idempotent: bool, **kwargs: Any) -> httpx.Response:
        attempts = 1 + (self.retries if idempotent else 0)
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TimeoutException as exc:
                if last:
                    raise TimeoutError(f"{self.url}{path} did not answer in time") from exc
            except httpx.TransportError as exc:
                if last:
                    raise ConnectError(f"Cannot connect to {self.url}: {exc}") from exc
            else:
                if response.status_code not in RETRY_STATUSES or last:
                    return response
            delay = BACKOFF_BASE * 2**attempt
            logger.info("retrying %s %s in %.2fs", method, path, delay)
            time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _call(
        self, model: type[M], method: str, path: str, *, idempotent: bool, **kwargs: Any
    ) -> M:
        response = self._send(method, path, idempotent=idempotent, **kwargs)
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.is_error:
            raise parse_error(response.status_code, body)
        if body is None:
            raise ProtocolError(
                f"{self.url}{path} answered {response.status_code} with a body that is not JSON;"
                " is this a corteza server?"
            )
        try:
            return model.model_validate(body)
        except ValidationError as exc:
            raise ProtocolError(f"unexpected answer from {self.url}{path}: {exc}") from exc

    # -- the seed's routes ----------------------------------------------

    def health(self) -> HealthResponse:
        return self._call(HealthResponse, "GET", "/health", idempotent=True)

    def info(self) -> InfoResponse:
        return self._call(InfoResponse, "GET", "/info", idempotent=True)

    def status(self) -> StatusResponse:
        return self._call(StatusResponse, "GET", "/status", idempotent=True)

    def metrics(self) -> MetricsResponse:
        return self._call(MetricsResponse, "GET", "/metricas", idempotent=True)

    def diagnose(self) -> DiagnosticResponse:
        return self._call(DiagnosticResponse, "POST", "/diagnostico", idempotent=True)

    def train_batch(
        self, inputs: ArrayLike, labels: ArrayLike, *, epochs: int = 1
    ) -> TrainResponse:
        """Train on one batch: ``inputs`` (B, D) or (B, T, D), ``labels`` (B,) of 0/1."""
        body = encode_json_batch(inputs, labels, epochs=epochs)
        return self._call(
            TrainResponse,
            "POST",
            "/train_layer2",
            idempotent=False,
            content=body,
            headers={"Content-Type": "application/json"},
        )

    def send_feedback(self, adjustments: Sequence[float], validated: bool) -> FeedbackResponse:
        """Send dendritic feedback (the seed's ``enviarFeedback``)."""
        payload = {
            "ajustes_aplicados": [float(v) for v in adjustments],
            "validacion": bool(validated),
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        return self._call(
            FeedbackResponse, "POST", "/feedback_dendritas", idempotent=False, json=payload
        )


def encode_json_batch(inputs: ArrayLike, labels: ArrayLike, *, epochs: int = 1) -> bytes:
    """The seed's ``/train_layer2`` JSON body for a batch."""
    rows = np.asarray(inputs, dtype=np.float32).tolist()
    label_list = [int(v) if float(v).is_integer() else float(v) for v in np.asarray(labels).ravel()]
    if len(rows) != len(label_list):
        raise ValueError(f"got {len(rows)} samples but {len(label_list)} labels")
    samples = [
        {"input_data": row, "anomaly_label": label}
        for row, label in zip(rows, label_list, strict=True)
    ]
    # NaN/Inf go out as JSON's non-standard literals so the server names the sample.
    return json.dumps({"samples": samples, "epochs": epochs}).encode()
