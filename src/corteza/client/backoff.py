"""How long to wait between attempts to reach the server."""

from __future__ import annotations

import time
from dataclasses import dataclass

from corteza.client.errors import ConnectError


@dataclass(frozen=True)
class Backoff:
    """Waits between attempts to reach the server: ``first`` seconds, doubling up to ``maximum``."""

    first: float = 0.5
    maximum: float = 10.0

    def delay(self, attempt: int) -> float:
        return float(min(self.maximum, self.first * 2 ** min(attempt, 30)))


class Attempts:
    """Attempts to reach a server that fail in a row: how long to wait before the next,
    waiting per ``backoff``, until ``give_up_after`` seconds of failing (None: never)."""

    def __init__(self, backoff: Backoff, give_up_after: float | None) -> None:
        self.backoff = backoff
        self.give_up_after = give_up_after
        self._failing_since: float | None = None
        self._attempt = 0

    def failed(self, url: str, reason: str) -> float:
        """Seconds to wait before the next attempt; raises ``ConnectError`` when it is time
        to give up."""
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        delay = self.backoff.delay(self._attempt)
        self._attempt += 1
        waited = now - self._failing_since
        if self.give_up_after is not None:
            remaining = self.give_up_after - waited
            if remaining <= 0:
                raise ConnectError(f"Cannot reach {url} ({reason}); gave up after {waited:.1f} s")
            delay = min(delay, remaining)
        return delay

    def succeeded(self) -> None:
        """The server answered: the next failure starts a new count."""
        self._failing_since, self._attempt = None, 0
