"""``GET /v1/events``: the server's events as Server-Sent Events, resumable with Last-Event-ID."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator

import anyio
from fastapi import APIRouter, Header
from sse_starlette import EventSourceResponse, ServerSentEvent

from corteza.server.edge.deps import StateDep
from corteza.server.edge.errors import ApiError
from corteza.server.edge.openapi import error_responses
from corteza.server.observe.bus import EVENT_TYPES, EventBus
from corteza.wire import ErrorType

router = APIRouter(prefix="/v1", tags=["monitoring"])

PING_SECONDS = 15  # keeps proxies and tunnels from closing an idle stream
SHUTDOWN_GRACE = 2.0  # seconds for the streams to end cleanly when the server stops
MAX_ID_DIGITS = 20  # ids are microseconds since the epoch: 16 digits until the year 2286
_DIGITS = re.compile(r"[0-9]+")  # ASCII only: str.isdigit() also takes '²', which int() refuses


def parse_last_event_id(value: str | None) -> int | None:
    if value is None or not value.strip():
        return None
    text = value.strip()
    if not _DIGITS.fullmatch(text):
        raise ApiError(
            422,
            f"Last-Event-ID must be a non-negative integer, got {text[:40]!r}",
            ErrorType.INVALID_REQUEST,
        )
    if len(text) > MAX_ID_DIGITS:
        raise ApiError(
            422,
            f"Last-Event-ID must have at most {MAX_ID_DIGITS} digits, got {len(text)}",
            ErrorType.INVALID_REQUEST,
        )
    return int(text)


def parse_types(value: str | None) -> frozenset[str] | None:
    if value is None:
        return None
    wanted = frozenset(t.strip() for t in value.split(",") if t.strip())
    unknown = sorted(wanted - set(EVENT_TYPES))
    if unknown or not wanted:
        raise ApiError(
            422,
            f"Unknown event type {', '.join(unknown) or '(none)'}; known: {', '.join(EVENT_TYPES)}",
            ErrorType.INVALID_REQUEST,
        )
    return wanted


async def messages(
    bus: EventBus, last_event_id: int | None, types: frozenset[str] | None
) -> AsyncIterator[ServerSentEvent]:
    async for event in bus.subscribe(last_event_id):
        if types is None or event.type in types:
            yield ServerSentEvent(json.dumps(event.to_json()), event=event.type, id=str(event.id))


@router.get(
    "/events",
    summary="Live events (Server-Sent Events)",
    response_class=EventSourceResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "An endless event stream"},
        **error_responses(422),
    },
)
async def events(
    state: StateDep,
    types: str | None = None,
    last_event_id: str | None = Header(default=None, alias="Last-Event-ID"),
) -> EventSourceResponse:
    """Every event still buffered after ``Last-Event-ID`` (all of them without it), then live.

    Each message is ``id: <id>``, ``event: <type>``, ``data: <json>``. ``types``
    (``batch_trained,feedback``) keeps those only. A client that falls far
    behind is cut off; it reconnects with ``Last-Event-ID`` and loses nothing
    still buffered (the last 1000 events). Ids count on from the microseconds
    since the epoch at start, so they grow across restarts; a ``Last-Event-ID``
    beyond the newest (another server's) replays the whole buffer.
    """
    after = parse_last_event_id(last_event_id)
    wanted = parse_types(types)
    stopping = anyio.Event()

    async def end_streams_on_shutdown() -> None:
        # Set on SIGTERM/SIGINT: closing the bus ends every stream with a clean last chunk.
        await stopping.wait()
        state.events.close()

    return EventSourceResponse(
        messages(state.events, after, wanted),
        ping=PING_SECONDS,
        shutdown_event=stopping,
        shutdown_grace_period=SHUTDOWN_GRACE,
        data_sender_callable=end_streams_on_shutdown,
    )
