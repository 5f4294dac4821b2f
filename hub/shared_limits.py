"""Rate limits that hold for the whole cluster: token buckets kept in Redis, one atomic
script per check (one round trip), shared by every node; while Redis cannot be reached,
each node falls back to a bucket of its own, so a limit is never simply off.

Behind a load balancer a per-node bucket gives a client N times its rate on N nodes;
these do not.
"""

from __future__ import annotations

import logging

from redis.exceptions import RedisError

from hub.broker.clients import RedisClient
from hub.limits import Limit

log = logging.getLogger("hub")

BUCKET_PREFIX = "hub:rl:"

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

    async def take(self, key: str) -> float:
        bucket = f"{BUCKET_PREFIX}{self.name}:{key}"
        try:
            waited = await self._script(keys=[bucket], args=[self.rate, self._burst, 1])
        except (RedisError, OSError) as error:
            log.debug("shared limit %s checked locally: %s", self.name, error)
            return await super().take(key)
        return int(waited) / 1000
