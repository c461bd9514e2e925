"""``Client``: the Python client of a corteza server, on httpx.

It and :class:`~corteza.client.async_client.AsyncClient` share one
description of each call (:class:`_Call`) and one way of turning an answer
into a result or an exception (:class:`_ClientBase`); they differ only in
how they send.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

import httpx
import numpy as np
from numpy.typing import ArrayLike, NDArray
from pydantic import BaseModel, ValidationError

from corteza._version import __version__
from corteza.client.config import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    resolve_token,
    resolve_url,
)
from corteza.client.errors import ConnectError, ProtocolError, TimeoutError, parse_error
from corteza.client.events import Event, iter_events
from corteza.client.inference import (
    EXPORT_PATH,
    PREDICT_PATH,
    Progress,
    binary_predictions,
    download_onnx,
    predict_body,
)
from corteza.client.payloads import (
    encode_json_batch,
    invalid_data,
    preflight_batch,
    preflight_inputs,
)
from corteza.client.transfer import pull_checkpoint, push_checkpoint
from corteza.wire import (
    BATCH_CONTENT_TYPE,
    BatchError,
    DiagnosticResponse,
    FeedbackResponse,
    HealthResponse,
    InfoResponse,
    MetricsResponse,
    PredictResponse,
    StatusResponse,
    TrainResponse,
    WireDtype,
    encode_batch,
)

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

RETRY_STATUSES = frozenset({502, 503, 504})
BACKOFF_BASE = 0.25  # seconds; doubled on each retry
BACKOFF_MAX = 8.0
WireFormat = Literal["binary", "json"]
Targets = tuple["ArrayLike | None", "ArrayLike | None"]  # dendrite, coherence


@dataclass(frozen=True)
class Predictions:
    """Per-sample outputs of ``predict``."""

    anomaly_prob: NDArray[np.float32]  # (B,)
    dendrites: NDArray[np.float32]  # (B, 16)
    coherence: NDArray[np.float32]  # (B, 64)


@dataclass
class _Call(Generic[M]):
    """One request and the model its answer parses into."""

    model: type[M]
    method: str
    path: str
    idempotent: bool
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


def _parse(call: _Call[M], response: httpx.Response, url: str) -> M:
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.is_error:
        if not (isinstance(body, dict) and "error_type" in body) and response.status_code < 500:
            raise ProtocolError(
                f"{url}{call.path} answered HTTP {response.status_code} without corteza's "
                "error body; is this a corteza server?"
            )
        raise parse_error(response.status_code, body)
    if body is None:
        raise ProtocolError(
            f"{url}{call.path} answered {response.status_code} with a body that is not JSON;"
            " is this a corteza server?"
        )
    try:
        return call.model.model_validate(body)
    except ValidationError as exc:
        raise ProtocolError(f"unexpected answer from {url}{call.path}: {exc}") from exc


def _backoff(attempt: int) -> float:
    return float(min(BACKOFF_MAX, BACKOFF_BASE * 2**attempt))


class _ClientBase:
    """What both clients share: where the server is, headers, and call descriptions."""

    def __init__(
        self,
        url: str | None,
        *,
        token: str | None,
        retries: int,
        check: bool,
        wire_format: WireFormat,
        wire_dtype: WireDtype,
    ) -> None:
        if wire_format not in ("binary", "json"):
            raise ValueError(f"wire_format must be 'binary' or 'json', got {wire_format!r}")
        self.url = resolve_url(url)
        self.retries = retries
        self.check = check
        self.wire_format = wire_format
        self.wire_dtype = wire_dtype
        self._input_dim: int | None = None
        self._headers = {"User-Agent": f"corteza/{__version__}"}
        token = resolve_token(token, self.url)
        if token:
            self._headers["Authorization"] = f"Bearer {token}"

    @staticmethod
    def _timeout(timeout: float) -> httpx.Timeout:
        return httpx.Timeout(timeout, connect=min(timeout, DEFAULT_CONNECT_TIMEOUT))

    def _translate(self, exc: httpx.HTTPError, path: str) -> Exception:
        if isinstance(exc, httpx.TimeoutException):
            return TimeoutError(f"{self.url}{path} did not answer in time")
        return ConnectError(f"Cannot connect to {self.url}: {exc}")

    def _train_call(
        self,
        inputs: NDArray[np.float32],
        labels: NDArray[np.float32],
        epochs: int,
        targets: Targets | None = None,
    ) -> _Call[TrainResponse]:
        dendrite, coherence = targets or (None, None)
        if self.wire_format == "json":
            body = encode_json_batch(
                inputs,
                labels,
                epochs=epochs,
                dendrite_target=dendrite,
                coherence_target=coherence,
            )
            content_type = "application/json"
        else:
            try:
                body = encode_batch(
                    inputs,
                    labels,
                    epochs=epochs,
                    dtype=self.wire_dtype,
                    dendrite_target=dendrite,
                    coherence_target=coherence,
                )
            except BatchError as exc:
                raise invalid_data(exc) from exc
            content_type = BATCH_CONTENT_TYPE
        return _Call(
            TrainResponse,
            "POST",
            "/train_layer2",
            idempotent=False,
            content=body,
            headers={"Content-Type": content_type},
        )

    def _predict_call(self, inputs: NDArray[np.float32]) -> _Call[PredictResponse]:
        binary = self.wire_format == "binary"
        body, headers = predict_body(inputs, binary=binary, dtype=self.wire_dtype)
        return _Call(
            PredictResponse, "POST", PREDICT_PATH, idempotent=True, content=body, headers=headers
        )

    @staticmethod
    def _feedback_call(
        adjustments: Sequence[float],
        validated: bool,
        batch_id: str | None = None,
        reward: float | None = None,
    ) -> _Call[FeedbackResponse]:
        payload: dict[str, object] = {
            "ajustes_aplicados": [float(v) for v in adjustments],
            "validacion": bool(validated),
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        if batch_id is not None:
            payload["batch_id"] = batch_id
        if reward is not None:
            payload["reward"] = float(reward)
        return _Call(
            FeedbackResponse,
            "POST",
            "/feedback_dendritas",
            idempotent=False,
            content=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
        )

    def _predictions(self, call: _Call[PredictResponse], response: httpx.Response) -> Predictions:
        arrays = binary_predictions(response, self.url)
        if arrays is not None:
            return Predictions(*arrays)
        answer = _parse(call, response, self.url)
        return Predictions(
            np.asarray(answer.anomaly_prob, dtype=np.float32),
            np.asarray(answer.dendrites, dtype=np.float32),
            np.asarray(answer.coherence, dtype=np.float32),
        )


class Client(_ClientBase):
    """Talks to one corteza server.

    >>> with Client("http://127.0.0.1:8000") as client:  # doctest: +SKIP
    ...     client.health().alive
    True

    The URL comes from the argument, then ``CORTEZA_URL``, then the seed's
    ``COLAB_SERVER_URL``; the token from the argument, then ``CORTEZA_TOKEN``.
    Idempotent calls are retried with backoff on connection errors and on
    502/503/504; training is not retried (it would train twice). With
    ``check=True`` (the default) batches are checked against the server's
    input width before they are sent, with the server's own words. Batches
    travel as safetensors (``wire_format="binary"``, 5x fewer bytes than the
    seed's JSON; ``wire_dtype="f16"`` halves that again) or as the seed's JSON.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        check: bool = True,
        wire_format: WireFormat = "binary",
        wire_dtype: WireDtype = "f32",
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(
            url,
            token=token,
            retries=retries,
            check=check,
            wire_format=wire_format,
            wire_dtype=wire_dtype,
        )
        self._http = httpx.Client(
            base_url=self.url,
            headers=self._headers,
            timeout=self._timeout(timeout),
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, call: _Call[M]) -> M:
        return _parse(call, self._send(call), self.url)

    def _send(self, call: _Call[M]) -> httpx.Response:
        attempts = 1 + (self.retries if call.idempotent else 0)
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                response = self._http.request(
                    call.method, call.path, content=call.content, headers=call.headers
                )
            except httpx.HTTPError as exc:
                if last:
                    raise self._translate(exc, call.path) from exc
            else:
                if response.status_code not in RETRY_STATUSES or last:
                    return response
            logger.info("retrying %s %s", call.method, call.path)
            time.sleep(_backoff(attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    def input_dim(self) -> int:
        """The model's input width, read once from ``/info``."""
        if self._input_dim is None:
            self._input_dim = self.info().input_dim
        return self._input_dim

    def health(self) -> HealthResponse:
        return self._run(_Call(HealthResponse, "GET", "/health", idempotent=True))

    def info(self) -> InfoResponse:
        return self._run(_Call(InfoResponse, "GET", "/info", idempotent=True))

    def status(self) -> StatusResponse:
        return self._run(_Call(StatusResponse, "GET", "/status", idempotent=True))

    def metrics(self) -> MetricsResponse:
        return self._run(_Call(MetricsResponse, "GET", "/metricas", idempotent=True))

    def events(
        self,
        last_event_id: int | None = None,
        *,
        types: Sequence[str] | None = None,
        reconnect: bool = True,
    ) -> Iterator[Event]:
        """The server's live events (``GET /v1/events``); see :mod:`corteza.client.events`."""
        return iter_events(self._http, self.url, last_event_id, types=types, reconnect=reconnect)

    def diagnose(self) -> DiagnosticResponse:
        return self._run(_Call(DiagnosticResponse, "POST", "/diagnostico", idempotent=True))

    def train_batch(
        self,
        inputs: ArrayLike,
        labels: ArrayLike,
        *,
        epochs: int = 1,
        dendrite_target: ArrayLike | None = None,
        coherence_target: ArrayLike | None = None,
    ) -> TrainResponse:
        """Train on one batch: ``inputs`` (B, D) or (B, T, D), ``labels`` (B,) of 0/1.

        Optional ``dendrite_target`` (B, 16) and ``coherence_target`` (B, 64)
        add the MSE of those heads to the loss; ``head_losses`` reports each.
        """
        if self.check:
            x, y = preflight_batch(inputs, labels, self.input_dim(), epochs)
        else:
            x, y = np.asarray(inputs, np.float32), np.asarray(labels, np.float32)
        targets = (dendrite_target, coherence_target)
        return self._run(self._train_call(x, y, epochs, targets))

    def predict(self, inputs: ArrayLike) -> Predictions:
        """Outputs per sample, without training (``POST /v1/predict``).

        Safetensors both ways with ``wire_format="binary"``, JSON with ``"json"``.
        """
        x = preflight_inputs(inputs, self.input_dim()) if self.check else np.asarray(inputs)
        call = self._predict_call(x)
        return self._predictions(call, self._send(call))

    def send_feedback(
        self,
        adjustments: Sequence[float],
        validated: bool,
        *,
        batch_id: str | None = None,
        reward: float | None = None,
    ) -> FeedbackResponse:
        """Send dendritic feedback (the seed's ``enviarFeedback``).

        Validated feedback makes ``adjustments`` the dendrite head's target on
        the inputs of ``batch_id`` (the latest batch when None), weighted by
        ``reward`` in [0, 1]; not validated, it is recorded only.
        """
        return self._run(self._feedback_call(adjustments, validated, batch_id, reward))

    def pull(self, dest: str | Path = ".") -> Path:
        """Download the latest checkpoint into ``dest``; returns its folder."""
        try:
            return pull_checkpoint(self._http, Path(dest))
        except httpx.HTTPError as exc:
            raise self._translate(exc, "/v1/checkpoint") from exc

    def export_onnx(self, dest: str | Path = ".", *, progress: Progress | None = None) -> Path:
        """Download the current weights as ONNX into ``dest`` (a folder or a ``.onnx`` file).

        Run it with :class:`~corteza.client.OnnxModel`, no server needed.
        """
        try:
            return download_onnx(self._http, Path(dest), progress)
        except httpx.HTTPError as exc:
            raise self._translate(exc, EXPORT_PATH) from exc

    def push(self, path: str | Path) -> dict[str, Any]:
        """Upload a checkpoint folder; the server verifies it and continues from it."""
        try:
            return push_checkpoint(self._http, Path(path))
        except httpx.HTTPError as exc:
            raise self._translate(exc, "/v1/checkpoint/uploads") from exc
