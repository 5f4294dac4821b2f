"""Token buckets: a steady rate with room for bursts, alone or one per key."""

from __future__ import annotations

import time
from enum import Enum


class TokenBucket:
    """A steady `rate` with room for `burst`."""

    __slots__ = ("_burst", "_rate", "_stamp", "_tokens")

    def __init__(self, rate: float, burst: float) -> None:
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._stamp = time.monotonic()

    def take(self, cost: float = 1.0) -> float:
        """Take `cost` tokens: 0.0 when granted, else the seconds until they will be there."""
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if self._tokens >= cost:
            self._tokens -= cost
            return 0.0
        return (cost - self._tokens) / self._rate

    def reserve(self, cost: float = 1.0) -> float:
        """Take `cost` tokens, into debt if need be: the seconds until they are paid for.
        For a sender that waits its turn (in the order it asked), not a receiver that
        refuses."""
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate) - cost
        self._stamp = now
        return max(0.0, -self._tokens / self._rate)

    @property
    def full(self) -> bool:
        elapsed = time.monotonic() - self._stamp
        return self._tokens + elapsed * self._rate >= self._burst


class KeyedBuckets:
    """One bucket per key (a client address, an operator), at most `max_keys` of them:
    when full, the buckets that have refilled (idle keys) are forgotten."""

    __slots__ = ("_buckets", "_burst", "_max_keys", "_rate")

    def __init__(self, rate: float, burst: float, max_keys: int = 10000) -> None:
        self._rate = rate
        self._burst = burst
        self._max_keys = max_keys
        self._buckets: dict[object, TokenBucket] = {}

    def take(self, key: object) -> float:
        """Take a token from `key`'s bucket: 0.0 when granted, else seconds to wait."""
        return self.take_many(key, 1.0)

    def take_many(self, key: object, cost: float) -> float:
        """Take `cost` tokens from `key`'s bucket: 0.0 when granted, else seconds to wait."""
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is None:
            if len(buckets) >= self._max_keys:
                for idle in [k for k, b in buckets.items() if b.full]:
                    del buckets[idle]
            bucket = buckets[key] = TokenBucket(self._rate, self._burst)
        return bucket.take(cost)


class Verdict(Enum):
    """What becomes of one frame under a `FrameLimit`."""

    ADMIT = "admit"
    REFUSE = "refuse"
    CLOSE = "close"
    """Refused more often in a row than the burst: the peer ignores refusals."""


class FrameLimit(TokenBucket):
    """A socket's frame rate: frames past `rate` (with room for `burst`) are refused, and
    a peer that keeps sending through more refusals than `burst` is to be closed. A bucket
    itself, not one more object, since every socket has one."""

    __slots__ = ("_strikes",)

    def __init__(self, rate: float, burst: int) -> None:
        super().__init__(rate, burst)
        self._strikes = 0

    def admit(self) -> Verdict:
        if self.take() == 0.0:
            self._strikes = 0
            return Verdict.ADMIT
        self._strikes += 1
        return Verdict.CLOSE if self._strikes > self._burst else Verdict.REFUSE
