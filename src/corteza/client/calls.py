"""One request to a corteza server and what its answer becomes.

:class:`Call` describes a request and the pydantic model its answer parses
into; :func:`parse_answer` turns the answer into that model or into the typed
exception of :mod:`corteza.client.errors`. Both clients and the streaming
trainer (:mod:`corteza.client.training`) build on these two, so an answer
means the same thing however it was sent.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from corteza.client.errors import ProtocolError, parse_error
from corteza.wire import FeedbackResponse

M = TypeVar("M", bound=BaseModel)

#: Answers after which an idempotent call is sent again.
RETRY_STATUSES = frozenset({502, 503, 504})
#: Gateways in front of a server that is down or restarting (Cloudflare's 52x included):
#: the server may come back, so streams reopen and the trainer waits for it.
GATEWAY_STATUSES = RETRY_STATUSES | frozenset(range(520, 531))


@dataclass
class Call(Generic[M]):
    """One request and the model its answer parses into."""

    model: type[M]
    method: str
    path: str
    idempotent: bool
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


def parse_answer(call: Call[M], response: httpx.Response, url: str) -> M:
    """The answer to ``call`` as its model; an error answer raises its typed exception.

    An error without corteza's JSON body (below 500), or a success that is not
    the model's JSON, raises :class:`~corteza.client.errors.ProtocolError`:
    something other than a corteza server answered at ``url``.
    """
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


def feedback_call(
    adjustments: Sequence[float],
    validated: bool,
    batch_id: str | None = None,
    reward: float | None = None,
) -> Call[FeedbackResponse]:
    """``POST /feedback_dendritas``: the seed's dendritic feedback on a batch."""
    payload: dict[str, object] = {
        "ajustes_aplicados": [float(v) for v in adjustments],
        "validacion": bool(validated),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if batch_id is not None:
        payload["batch_id"] = batch_id
    if reward is not None:
        payload["reward"] = float(reward)
    return Call(
        FeedbackResponse,
        "POST",
        "/feedback_dendritas",
        idempotent=False,
        content=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
    )
