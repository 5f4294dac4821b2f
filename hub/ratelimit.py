"""Token buckets: a steady rate with room for bursts."""

from __future__ import annotations

import time


class TokenBucket:
    __slots__ = ("_burst", "_rate", "_stamp", "_tokens")

    def __init__(self, rate: float, burst: float) -> None:
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._stamp = time.monotonic()

    def take(self) -> float:
        """Take one token: 0.0 when granted, else the seconds until one will be there."""
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self._rate

    @property
    def full(self) -> bool:
        elapsed = time.monotonic() - self._stamp
        return self._tokens + elapsed * self._rate >= self._burst
