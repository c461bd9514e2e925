"""``AsyncClient``: the asynchronous twin of :class:`~corteza.client.Client`.

Checkpoint and ONNX transfers (``pull``, ``push``, ``export_onnx``) run the
client's own code in a worker thread, over a connection of their own with the
same URL, headers and timeout: writing and fsyncing files blocks, and the event
loop must not.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
from numpy.typing import ArrayLike

from corteza.client.calls import Call, M, feedback_call, parse_answer
from corteza.client.client import BaseClient, Predictions, WireFormat
from corteza.client.config import DEFAULT_RETRIES, DEFAULT_TIMEOUT
from corteza.client.events import Event, aiter_events
from corteza.client.inference import EXPORT_PATH, Progress, export_to
from corteza.client.jobs import AsyncJobCalls
from corteza.client.payloads import preflight_batch, preflight_inputs
from corteza.client.transfer import PULL_PATH, PUSH_PATH, pull_checkpoint, push_checkpoint
from corteza.client.uploads import AsyncDatasetCalls
from corteza.wire import (
    DiagnosticResponse,
    FeedbackResponse,
    HealthResponse,
    InfoResponse,
    MetricsResponse,
    StatusResponse,
    TrainResponse,
    WireDtype,
)
from corteza.wire.schemas import CheckpointSaved

logger = logging.getLogger(__name__)

T = TypeVar("T")


class AsyncClient(BaseClient, AsyncDatasetCalls, AsyncJobCalls):
    """The asynchronous twin of :class:`Client`, with the same methods awaited.

    >>> async with AsyncClient("http://127.0.0.1:8000") as client:  # doctest: +SKIP
    ...     (await client.status()).estadisticas.total_muestras
    0
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
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(
            url,
            token=token,
            retries=retries,
            check=check,
            wire_format=wire_format,
            wire_dtype=wire_dtype,
        )
        self._http = httpx.AsyncClient(
            base_url=self.url,
            headers=self._headers,
            timeout=self._timeout(timeout),
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _run(self, call: Call[M]) -> M:
        return parse_answer(call, await self._send(call), self.url)

    async def _send(self, call: Call[M]) -> httpx.Response:
        attempt = 0
        while True:
            outcome: httpx.Response | httpx.HTTPError
            try:
                outcome = await self._http.request(
                    call.method, call.path, content=call.content, headers=call.headers
                )
            except httpx.HTTPError as exc:
                outcome = exc
            delay = self._retry_delay(call, attempt, outcome)
            if delay is None:
                return self._settle(call, outcome)
            await asyncio.sleep(delay)
            attempt += 1

    async def _transfer_aside(
        self, move: Callable[[httpx.Client, Path], T], path: Path, route: str
    ) -> T:
        """``move`` in a worker thread, over a sync connection configured like this client."""

        def run() -> T:
            with httpx.Client(
                base_url=self.url, headers=self._headers, timeout=self._http.timeout
            ) as http:
                return self._transfer(http, move, path, route)

        return await asyncio.to_thread(run)

    async def input_dim(self) -> int:
        if self._input_dim is None:
            self._input_dim = (await self.info()).input_dim
        return self._input_dim

    async def health(self) -> HealthResponse:
        return await self._run(Call(HealthResponse, "GET", "/health", idempotent=True))

    async def info(self) -> InfoResponse:
        return await self._run(Call(InfoResponse, "GET", "/info", idempotent=True))

    async def status(self) -> StatusResponse:
        return await self._run(Call(StatusResponse, "GET", "/status", idempotent=True))

    async def metrics(self) -> MetricsResponse:
        return await self._run(Call(MetricsResponse, "GET", "/metricas", idempotent=True))

    def events(
        self,
        last_event_id: int | None = None,
        *,
        types: Sequence[str] | None = None,
        reconnect: bool = True,
    ) -> AsyncIterator[Event]:
        """The server's live events, asynchronously: ``async for event in client.events()``."""
        return aiter_events(self._http, self.url, last_event_id, types=types, reconnect=reconnect)

    async def diagnose(self) -> DiagnosticResponse:
        return await self._run(Call(DiagnosticResponse, "POST", "/diagnostico", idempotent=True))

    async def train_batch(
        self,
        inputs: ArrayLike,
        labels: ArrayLike,
        *,
        epochs: int = 1,
        dendrite_target: ArrayLike | None = None,
        coherence_target: ArrayLike | None = None,
    ) -> TrainResponse:
        if self.check:
            x, y = preflight_batch(inputs, labels, await self.input_dim(), epochs)
        else:
            x, y = np.asarray(inputs, np.float32), np.asarray(labels, np.float32)
        targets = (dendrite_target, coherence_target)
        return await self._run(self._train_call(x, y, epochs, targets))

    async def predict(self, inputs: ArrayLike) -> Predictions:
        dim = await self.input_dim() if self.check else 0
        x = preflight_inputs(inputs, dim) if self.check else np.asarray(inputs)
        call = self._predict_call(x)
        return self._predictions(call, await self._send(call))

    async def send_feedback(
        self,
        adjustments: Sequence[float],
        validated: bool,
        *,
        batch_id: str | None = None,
        reward: float | None = None,
    ) -> FeedbackResponse:
        return await self._run(feedback_call(adjustments, validated, batch_id, reward))

    async def save_checkpoint(self) -> CheckpointSaved:
        """Ask the server to save a checkpoint now, after the batches it has queued."""
        return await self._run(Call(CheckpointSaved, "POST", PULL_PATH, idempotent=True))

    async def pull(self, dest: str | Path = ".") -> Path:
        """Download the latest checkpoint into ``dest``; returns its folder."""
        return await self._transfer_aside(pull_checkpoint, Path(dest), PULL_PATH)

    async def export_onnx(
        self, dest: str | Path = ".", *, progress: Progress | None = None
    ) -> Path:
        """Download the current weights as ONNX into ``dest`` (a folder or a ``.onnx`` file).

        ``progress`` is called from the worker thread that writes the file.
        """
        return await self._transfer_aside(export_to(progress), Path(dest), EXPORT_PATH)

    async def push(self, path: str | Path) -> dict[str, Any]:
        """Upload a checkpoint folder; the server verifies it and continues from it."""
        return await self._transfer_aside(push_checkpoint, Path(path), PUSH_PATH)
