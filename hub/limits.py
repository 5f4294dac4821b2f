"""Rate limits: one kind of limit (a rate and a burst per key), and the factory that picks
the one for the deployment (shared through Redis for a cluster: `hub.shared_limits`).
A node alone never loads the Redis client."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hub.ratelimit import KeyedBuckets

if TYPE_CHECKING:
    from hub.redis.clients import RedisClient


class Limit:
    """One kind of limit (a rate and a burst per key), in this process only."""

    def __init__(self, name: str, rate: float, burst: float) -> None:
        self.name = name
        self.rate = rate
        self._local = KeyedBuckets(rate, burst)

    async def take(self, key: str) -> float:
        """0.0 when `key` may go on now, else the seconds it should wait."""
        return self._local.take(key)


def limit(name: str, rate: float, burst: float, redis: RedisClient | None) -> Limit | None:
    """The limit `name`, shared through `redis` when there is one; None when `rate` is 0."""
    if rate <= 0:
        return None
    if redis is None:
        return Limit(name, rate, burst)
    from hub.shared_limits import SharedLimit

    return SharedLimit(name, rate, burst, redis)
