"""The server's live events (``GET /v1/events``), followed through drops and restarts.

A dropped stream is opened again with ``Last-Event-ID`` after a backoff, so
no event still in the server's buffer (its last 1000) is lost. Event ids
grow across server restarts (they start from the clock), so a restarted
server sends every new event after the ``Last-Event-ID``; one beyond its
newest (another server's) gets its whole buffer.

>>> for event in client.events(types=["batch_trained"]):  # doctest: +SKIP
...     print(event.id, event.data["loss"])
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_sse import ServerSentEvent, aconnect_sse, connect_sse

from corteza.client.backoff import Backoff
from corteza.client.calls import GATEWAY_STATUSES
from corteza.client.errors import ConnectError, ProtocolError, parse_error

logger = logging.getLogger(__name__)

EVENTS_PATH = "/v1/events"
RECONNECT = Backoff(first=0.25, maximum=5.0)
READ_TIMEOUT = 45.0  # the server pings every 15 s: three missed pings mean a dead stream


@dataclass(frozen=True)
class Event:
    """One server event: ``id`` (growing, across restarts too), ``type``, unix ``time``."""

    id: int
    type: str
    time: float
    data: dict[str, Any]


def parse_event(sse: ServerSentEvent) -> Event:
    """An SSE message of ``/v1/events`` as an :class:`Event`."""
    try:
        payload = json.loads(sse.data)
        data = dict(payload)
        event_id = int(data.pop("id"))
        kind = str(data.pop("type"))
        when = float(data.pop("time"))
    except (ValueError, TypeError, KeyError) as exc:
        raise ProtocolError(f"malformed event from the server: {sse.data[:80]!r}") from exc
    return Event(event_id, kind, when, data)


def _request(last_event_id: int | None, types: Sequence[str] | None) -> dict[str, Any]:
    headers = {} if last_event_id is None else {"Last-Event-ID": str(last_event_id)}
    params = {"types": ",".join(types)} if types else None
    timeout = httpx.Timeout(READ_TIMEOUT, connect=10.0)
    return {"headers": headers, "params": params, "timeout": timeout}


def _refusal(response: httpx.Response, url: str) -> Exception | None:
    """None when ``response`` is a stream to read or a gateway to retry; else what to raise."""
    if response.status_code in GATEWAY_STATUSES:
        return None
    if response.is_error:
        try:
            body = json.loads(response.content)
        except ValueError:
            body = None
        if isinstance(body, dict) and "error_type" in body:
            return parse_error(response.status_code, body)
        return ProtocolError(
            f"{url}{EVENTS_PATH} answered HTTP {response.status_code} without corteza's "
            "error body; is this a corteza server?"
        )
    if not response.headers.get("content-type", "").startswith("text/event-stream"):
        return ProtocolError(f"{url}{EVENTS_PATH} is not an event stream; is this corteza?")
    return None


def _lost(url: str, reason: str, reconnect: bool) -> None:
    if not reconnect:
        raise ConnectError(f"Lost the event stream of {url}: {reason}")
    logger.info("event stream of %s lost (%s); reconnecting", url, reason)


def iter_events(
    http: httpx.Client,
    url: str,
    last_event_id: int | None = None,
    *,
    types: Sequence[str] | None = None,
    reconnect: bool = True,
    backoff: Backoff = RECONNECT,
) -> Iterator[Event]:
    """Events from the server behind ``http`` (whose base URL is ``url``), for ever.

    Without ``reconnect`` the iterator ends when the server ends the stream
    and raises :class:`ConnectError` when the connection is lost.
    """
    attempt = 0
    while True:
        try:
            with connect_sse(http, "GET", EVENTS_PATH, **_request(last_event_id, types)) as source:
                response = source.response
                if response.status_code not in GATEWAY_STATUSES:
                    if response.is_error:
                        response.read()
                    refusal = _refusal(response, url)
                    if refusal is not None:
                        raise refusal
                    for sse in source.iter_sse():
                        event = parse_event(sse)
                        last_event_id, attempt = event.id, 0
                        yield event
                    reason = "the server ended the stream"
                else:
                    reason = f"HTTP {response.status_code}"
        except httpx.TransportError as exc:
            reason = f"{type(exc).__name__}: {exc}"
        if not reconnect and reason == "the server ended the stream":
            return
        _lost(url, reason, reconnect)
        time.sleep(backoff.delay(attempt))
        attempt += 1


async def aiter_events(
    http: httpx.AsyncClient,
    url: str,
    last_event_id: int | None = None,
    *,
    types: Sequence[str] | None = None,
    reconnect: bool = True,
    backoff: Backoff = RECONNECT,
) -> AsyncIterator[Event]:
    """The asynchronous twin of :func:`iter_events`."""
    attempt = 0
    while True:
        try:
            request = _request(last_event_id, types)
            async with aconnect_sse(http, "GET", EVENTS_PATH, **request) as source:
                response = source.response
                if response.status_code not in GATEWAY_STATUSES:
                    if response.is_error:
                        await response.aread()
                    refusal = _refusal(response, url)
                    if refusal is not None:
                        raise refusal
                    async for sse in source.aiter_sse():
                        event = parse_event(sse)
                        last_event_id, attempt = event.id, 0
                        yield event
                    reason = "the server ended the stream"
                else:
                    reason = f"HTTP {response.status_code}"
        except httpx.TransportError as exc:
            reason = f"{type(exc).__name__}: {exc}"
        if not reconnect and reason == "the server ended the stream":
            return
        _lost(url, reason, reconnect)
        await asyncio.sleep(backoff.delay(attempt))
        attempt += 1
