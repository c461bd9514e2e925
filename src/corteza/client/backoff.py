"""How long to wait between attempts to reach the server."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Waits between attempts to reach the server: ``first`` seconds, doubling up to ``maximum``."""

    first: float = 0.5
    maximum: float = 10.0

    def delay(self, attempt: int) -> float:
        return float(min(self.maximum, self.first * 2 ** min(attempt, 30)))
