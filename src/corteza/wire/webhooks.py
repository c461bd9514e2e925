"""Webhook signatures, for the server that signs and the receivers that check.

A signed delivery carries ``X-Corteza-Timestamp: <unix seconds>`` and
``X-Corteza-Signature: sha256=<hex>``, the HMAC-SHA256 of
``f"{timestamp}.{body}"`` keyed with the shared secret. Every attempt of a
delivery is signed afresh with its own timestamp; its body and its
``X-Corteza-Delivery`` id are the same on every attempt, so a receiver
dedupes by that id.

>>> ok = verify_signature(secret, request.headers["X-Corteza-Timestamp"],
...                       body, request.headers["X-Corteza-Signature"])  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_PREFIX = "sha256="
DEFAULT_MAX_AGE = 300.0  # seconds a signed timestamp stays acceptable


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value


def sign(secret: str | bytes, timestamp: str, body: str | bytes) -> str:
    """The ``X-Corteza-Signature`` value for ``body`` sent at ``timestamp``."""
    message = _as_bytes(timestamp) + b"." + _as_bytes(body)
    digest = hmac.new(_as_bytes(secret), message, hashlib.sha256).hexdigest()
    return SIGNATURE_PREFIX + digest


def verify_signature(
    secret: str | bytes,
    timestamp: str,
    body: str | bytes,
    header: str | None,
    *,
    max_age: float | None = DEFAULT_MAX_AGE,
) -> bool:
    """Whether ``header`` signs ``body`` at ``timestamp`` with ``secret``.

    ``body`` is the raw request body, as received. With ``max_age`` (seconds),
    a timestamp further than that from this machine's clock is refused too,
    so a captured delivery cannot be replayed later.
    """
    if not header or not header.startswith(SIGNATURE_PREFIX):
        return False
    if max_age is not None:
        try:
            sent = float(timestamp)
        except ValueError:
            return False
        if abs(time.time() - sent) > max_age:
            return False
    return hmac.compare_digest(sign(secret, timestamp, body), header)
