"""Rate limits: one kind of limit (a rate and a burst per key), in this process; a
cluster shares them through Redis instead (`hub.shared_limits`, chosen by `hub.assembly`)."""

from __future__ import annotations

from hub.ratelimit import KeyedBuckets


class Limit:
    """One kind of limit (a rate and a burst per key), in this process only."""

    def __init__(self, name: str, rate: float, burst: float) -> None:
        self.name = name
        self.rate = rate
        self._local = KeyedBuckets(rate, burst)

    async def take(self, key: str) -> float:
        """0.0 when `key` may go on now, else the seconds it should wait."""
        return self._local.take(key)
