"""Rate limits that hold for the whole cluster: token buckets kept in Redis, one atomic
script per check (one round trip), shared by every node; while Redis cannot be reached,
each node falls back to a bucket of its own, so a limit is never simply off.

Behind a load balancer a per-node bucket gives a client N times its rate on N nodes;
these do not.

A key Redis refused is refused by this node alone until the wait Redis gave is over: a
refusal takes nothing from the bucket and other nodes can only take more, so Redis would
answer the same. And a node asks about one key once at a time: its other requests wait
for that answer (a round trip) and then are refused with it, ask in turn, or (when Redis
failed it) go by the local bucket. A client that keeps many requests in flight past its
limit then costs about two round trips per request let through, not one per request
refused (nor, each time, a connection of the pool its reads share with everyone else's).
"""

from __future__ import annotations

import asyncio
import logging
import time

from hub.limits import Limit
from hub.redis.clients import RedisClient
from hub.redis.failures import FAILURES

log = logging.getLogger("hub")

BUCKET_PREFIX = "hub:rl:"
MAX_REFUSED = 10000
"""Keys remembered as refused at most; past it, those whose wait is over are forgotten,
and a key refused while they are all still waiting is asked of Redis every time."""

TAKE = """
-- KEYS: the bucket. ARGV: rate (tokens/s), burst, cost.
-- Returns 0 when the tokens were taken, else the milliseconds until there will be enough.
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 't', 's')
local tokens, stamp = tonumber(state[1]) or burst, tonumber(state[2]) or now
tokens = math.min(burst, tokens + (now - stamp) * rate / 1000)
local wait = 0
if tokens >= cost then
  tokens = tokens - cost
else
  wait = math.ceil((cost - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 's', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return wait
"""


class SharedLimit(Limit):
    """The same limit for every node, in Redis; a local bucket while Redis is away."""

    def __init__(self, name: str, rate: float, burst: float, redis: RedisClient) -> None:
        super().__init__(name, rate, burst)
        self._burst = burst
        self._script = redis.register_script(TAKE)
        self._refused: dict[str, float] = {}
        """Keys Redis refused, to the time (`time.monotonic()`) their wait is over."""
        self._asking: dict[str, asyncio.Future[bool]] = {}
        """Keys Redis is being asked about: whether it answered, once it has."""

    async def take(self, key: str) -> float:
        while True:
            now = time.monotonic()
            until = self._refused.get(key, now)
            if now < until:
                return until - now
            asking = self._asking.get(key)
            if asking is None:
                return await self._ask(key, now)
            if not await asyncio.shield(asking):
                # Redis failed the request before this one: this one goes by the local
                # bucket at once rather than wait for Redis to fail it too.
                return await super().take(key)

    async def _ask(self, key: str, now: float) -> float:
        """Redis's answer for `key`, remembered before the requests waiting for it go on."""
        asking = self._asking[key] = asyncio.get_running_loop().create_future()
        answered = False
        try:
            bucket = f"{BUCKET_PREFIX}{self.name}:{key}"
            waited = await self._script(keys=[bucket], args=[self.rate, self._burst, 1])
            answered = True
        except FAILURES as error:
            log.debug("shared limit %s checked locally: %s", self.name, error)
            return await super().take(key)
        else:
            wait = int(waited) / 1000
            if wait > 0:
                self._remember(key, now + wait)
            else:
                self._refused.pop(key, None)
            return wait
        finally:
            del self._asking[key]
            asking.set_result(answered)

    def _remember(self, key: str, until: float) -> None:
        """Refuse `key` here until `until`, measured from before Redis was asked: as Redis
        would, give or take the script's rounding to the millisecond."""
        refused = self._refused
        if len(refused) >= MAX_REFUSED:
            now = time.monotonic()
            for over in [k for k, at in refused.items() if at <= now]:
                del refused[over]
            if len(refused) >= MAX_REFUSED:
                return
        refused[key] = until
