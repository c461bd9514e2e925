"""``AsyncClient``: the asynchronous twin of :class:`~corteza.client.Client`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence

import httpx
import numpy as np
from numpy.typing import ArrayLike

from corteza.client.client import (
    RETRY_STATUSES,
    M,
    Predictions,
    WireFormat,
    _backoff,
    _Call,
    _ClientBase,
    _parse,
)
from corteza.client.config import DEFAULT_RETRIES, DEFAULT_TIMEOUT
from corteza.client.events import Event, aiter_events
from corteza.client.payloads import preflight_batch, preflight_inputs
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

logger = logging.getLogger(__name__)


class AsyncClient(_ClientBase):
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

    async def _run(self, call: _Call[M]) -> M:
        return _parse(call, await self._send(call), self.url)

    async def _send(self, call: _Call[M]) -> httpx.Response:
        attempts = 1 + (self.retries if call.idempotent else 0)
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                response = await self._http.request(
                    call.method, call.path, content=call.content, headers=call.headers
                )
            except httpx.HTTPError as exc:
                if last:
                    raise self._translate(exc, call.path) from exc
            else:
                if response.status_code not in RETRY_STATUSES or last:
                    return response
            logger.info("retrying %s %s", call.method, call.path)
            await asyncio.sleep(_backoff(attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    async def input_dim(self) -> int:
        if self._input_dim is None:
            self._input_dim = (await self.info()).input_dim
        return self._input_dim

    async def health(self) -> HealthResponse:
        return await self._run(_Call(HealthResponse, "GET", "/health", idempotent=True))

    async def info(self) -> InfoResponse:
        return await self._run(_Call(InfoResponse, "GET", "/info", idempotent=True))

    async def status(self) -> StatusResponse:
        return await self._run(_Call(StatusResponse, "GET", "/status", idempotent=True))

    async def metrics(self) -> MetricsResponse:
        return await self._run(_Call(MetricsResponse, "GET", "/metricas", idempotent=True))

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
        return await self._run(_Call(DiagnosticResponse, "POST", "/diagnostico", idempotent=True))

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
        return await self._run(self._feedback_call(adjustments, validated, batch_id, reward))
