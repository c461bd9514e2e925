"""``Client``: the Python client of a corteza server, on httpx.

It and :class:`~corteza.client.async_client.AsyncClient` share one
description of each call (:class:`~corteza.client.calls.Call`), one way of
turning an answer into a result or an exception
(:func:`~corteza.client.calls.parse_answer`) and one retry policy
(:class:`BaseClient`); they differ only in how they send.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import httpx
import numpy as np
from numpy.typing import ArrayLike, NDArray

from corteza._version import __version__
from corteza.client.backoff import Backoff
from corteza.client.calls import RETRY_STATUSES, Call, M, feedback_call, parse_answer
from corteza.client.config import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    resolve_token,
    resolve_url,
)
from corteza.client.errors import ConnectError, TimeoutException
from corteza.client.events import Event, iter_events
from corteza.client.inference import (
    EXPORT_PATH,
    PREDICT_PATH,
    Progress,
    binary_predictions,
    export_to,
    predict_body,
)
from corteza.client.jobs import JobCalls
from corteza.client.payloads import (
    encode_json_batch,
    preflight_batch,
    preflight_inputs,
    refusal,
)
from corteza.client.transfer import PULL_PATH, PUSH_PATH, pull_checkpoint, push_checkpoint
from corteza.client.uploads import DatasetCalls
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
from corteza.wire.schemas import CheckpointSaved

logger = logging.getLogger(__name__)

T = TypeVar("T")

BACKOFF_BASE = 0.25  # seconds before the first retry; doubled on each one
BACKOFF_MAX = 8.0
WireFormat = Literal["binary", "json"]
Targets = tuple["ArrayLike | None", "ArrayLike | None"]  # dendrite, coherence


@dataclass(frozen=True)
class Predictions:
    """Per-sample outputs of ``predict``."""

    anomaly_prob: NDArray[np.float32]  # (B,)
    dendrites: NDArray[np.float32]  # (B, 16)
    coherence: NDArray[np.float32]  # (B, 64)


class BaseClient:
    """What both clients share: where the server is, headers, call descriptions and the retry
    policy. Use :class:`Client` or :class:`~corteza.client.async_client.AsyncClient`."""

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
            return TimeoutException(f"{self.url}{path} did not answer in time")
        return ConnectError(f"Cannot connect to {self.url}: {exc}")

    def _retry_delay(
        self, call: Call[M], attempt: int, outcome: httpx.Response | httpx.HTTPError
    ) -> float | None:
        """Seconds to wait before sending ``call`` again; None: ``outcome`` is its answer.

        Idempotent calls are sent again after a connection error or a 502/503/504,
        ``retries`` times at most; anything else is answered at once.
        """
        if attempt >= (self.retries if call.idempotent else 0):
            return None
        if isinstance(outcome, httpx.Response) and outcome.status_code not in RETRY_STATUSES:
            return None
        logger.info("retrying %s %s", call.method, call.path)
        return Backoff(BACKOFF_BASE, BACKOFF_MAX).delay(attempt)

    def _settle(self, call: Call[M], outcome: httpx.Response | httpx.HTTPError) -> httpx.Response:
        """The final answer to ``call``, or its transport failure raised as ours."""
        if isinstance(outcome, httpx.HTTPError):
            raise self._translate(outcome, call.path) from outcome
        return outcome

    def _transfer(
        self, http: httpx.Client, move: Callable[[httpx.Client, Path], T], path: Path, route: str
    ) -> T:
        """A checkpoint or export transfer (``move``), its transport failures raised as ours."""
        try:
            return move(http, path)
        except httpx.HTTPError as exc:
            raise self._translate(exc, route) from exc

    def _train_call(
        self,
        inputs: NDArray[np.float32],
        labels: NDArray[np.float32],
        epochs: int,
        targets: Targets | None = None,
    ) -> Call[TrainResponse]:
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
                raise refusal(exc) from exc
            content_type = BATCH_CONTENT_TYPE
        return Call(
            TrainResponse,
            "POST",
            "/train_layer2",
            idempotent=False,
            content=body,
            headers={"Content-Type": content_type},
        )

    def _predict_call(self, inputs: NDArray[np.float32]) -> Call[PredictResponse]:
        binary = self.wire_format == "binary"
        body, headers = predict_body(inputs, binary=binary, dtype=self.wire_dtype)
        return Call(
            PredictResponse, "POST", PREDICT_PATH, idempotent=True, content=body, headers=headers
        )

    def _predictions(self, call: Call[PredictResponse], response: httpx.Response) -> Predictions:
        arrays = binary_predictions(response, self.url)
        if arrays is not None:
            return Predictions(*arrays)
        answer = parse_answer(call, response, self.url)
        return Predictions(
            np.asarray(answer.anomaly_prob, dtype=np.float32),
            np.asarray(answer.dendrites, dtype=np.float32),
            np.asarray(answer.coherence, dtype=np.float32),
        )


class Client(BaseClient, DatasetCalls, JobCalls):
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
        self._sockets = transport is None or isinstance(transport, httpx.HTTPTransport)
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

    def _run(self, call: Call[M]) -> M:
        return parse_answer(call, self._send(call), self.url)

    def _send(self, call: Call[M]) -> httpx.Response:
        attempt = 0
        while True:
            outcome: httpx.Response | httpx.HTTPError
            try:
                outcome = self._http.request(
                    call.method, call.path, content=call.content, headers=call.headers
                )
            except httpx.HTTPError as exc:
                outcome = exc
            delay = self._retry_delay(call, attempt, outcome)
            if delay is None:
                return self._settle(call, outcome)
            time.sleep(delay)
            attempt += 1

    # ------------------------------------------------------------ for the streaming trainer
    # Public within the package (corteza.client.training), not part of the client's API.

    @property
    def token(self) -> str | None:
        """The bearer token this client sends, if any."""
        return self._headers.get("Authorization", "").removeprefix("Bearer ") or None

    @property
    def has_socket(self) -> bool:
        """Whether requests go over real sockets (not an injected transport, such as an
        ASGI app, that has no socket for a WebSocket)."""
        return self._sockets

    def send_to(self, url: str, call: Call[Any], token: str | None) -> httpx.Response:
        """Send ``call`` once to the server at ``url`` (maybe not :attr:`url`: a tunnel that
        came back elsewhere) with ``token``; its answer unparsed, or ``httpx.HTTPError``."""
        headers = {**call.headers, **({"Authorization": f"Bearer {token}"} if token else {})}
        return self._http.request(
            call.method, url + call.path, content=call.content, headers=headers
        )

    def input_dim(self) -> int:
        """The model's input width, read once from ``/info``."""
        if self._input_dim is None:
            self._input_dim = self.info().input_dim
        return self._input_dim

    def health(self) -> HealthResponse:
        return self._run(Call(HealthResponse, "GET", "/health", idempotent=True))

    def info(self) -> InfoResponse:
        return self._run(Call(InfoResponse, "GET", "/info", idempotent=True))

    def status(self) -> StatusResponse:
        return self._run(Call(StatusResponse, "GET", "/status", idempotent=True))

    def metrics(self) -> MetricsResponse:
        return self._run(Call(MetricsResponse, "GET", "/metricas", idempotent=True))

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
        return self._run(Call(DiagnosticResponse, "POST", "/diagnostico", idempotent=True))

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
        return self._run(feedback_call(adjustments, validated, batch_id, reward))

    def save_checkpoint(self) -> CheckpointSaved:
        """Ask the server to save a checkpoint now, after the batches it has queued."""
        return self._run(Call(CheckpointSaved, "POST", PULL_PATH, idempotent=True))

    def pull(self, dest: str | Path = ".") -> Path:
        """Download the latest checkpoint into ``dest``; returns its folder."""
        return self._transfer(self._http, pull_checkpoint, Path(dest), PULL_PATH)

    def export_onnx(self, dest: str | Path = ".", *, progress: Progress | None = None) -> Path:
        """Download the current weights as ONNX into ``dest`` (a folder or a ``.onnx`` file).

        Run it with :class:`~corteza.client.OnnxModel`, no server needed.
        """
        return self._transfer(self._http, export_to(progress), Path(dest), EXPORT_PATH)

    def push(self, path: str | Path) -> dict[str, Any]:
        """Upload a checkpoint folder; the server verifies it and continues from it."""
        return self._transfer(self._http, push_checkpoint, Path(path), PUSH_PATH)
