"""The REST calls a streamed run makes besides its batches: its end, the server's checkpoints.

Both are courtesies: a server without the route (an older corteza, the seed's) or one
that cannot be reached changes nothing about the run.
"""

from __future__ import annotations

import logging

import httpx
from pydantic import BaseModel

from corteza.client.calls import Call
from corteza.client.client import Client

logger = logging.getLogger(__name__)


def checkpoint_warning(client: Client, url: str, token: str | None) -> str | None:
    """One line when the server's checkpoints are failing: what it trained is not on disk.

    ``None`` when they are fine, or when the server does not say (older, the seed's)."""
    call = Call(BaseModel, "GET", "/status", idempotent=True)
    try:
        response = client.send_to(url, call, token)
        health = response.json().get("checkpoints") or {}
    except (httpx.HTTPError, ValueError, AttributeError):
        return None
    failures = health.get("consecutive_failures") if isinstance(health, dict) else None
    if not isinstance(failures, int) or failures <= 0:
        return None
    last = health.get("last") or "none"
    return (
        f"the server's checkpoints are failing ({failures} in a row: "
        f"{str(health.get('last_error'))[:200]}); nothing it trained since checkpoint "
        f"{last} is on disk yet"
    )


def say_finished(client: Client, url: str, token: str | None, run_id: str | None) -> None:
    """A run sent by REST has no stream to close: tell the server it is done, so it
    announces ``run_finished``."""
    if run_id is None:  # no run was named: nothing to finish
        return
    call = Call(BaseModel, "POST", f"/v1/runs/{run_id}/finish", idempotent=False)
    try:
        response = client.send_to(url, call, token)
    except httpx.HTTPError as exc:
        logger.info("could not tell %s that run %s finished: %s", url, run_id, exc)
        return
    if response.is_error:
        logger.info("%s did not take the end of run %s: HTTP %d", url, run_id, response.status_code)
