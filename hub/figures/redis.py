"""The board in Redis: a hash of instance to figures next to the node registry, so that a
dead node's figures go when it is declared dead (`hub.presence.scripts`)."""

from __future__ import annotations

import logging
from typing import Any

import orjson

from hub.figures.base import Board
from hub.presence.registry import Registry
from hub.presence.scripts import REGISTRY, STATS, Scripts
from hub.redis.clients import RedisClient
from hub.redis.failures import FAILURES, unavailable

log = logging.getLogger("hub")


class RedisBoard(Board):
    """Posts this node's figures under its registered instance, and reads the live ones."""

    def __init__(self, redis: RedisClient, scripts: Scripts, registry: Registry) -> None:
        self._redis = redis
        self._registry = registry
        self._node_figures = scripts.node_figures

    async def post(self, figures: dict[str, Any]) -> None:
        registry = self._registry
        if registry.stale:
            return  # an instance that may be dead must not write anything back
        try:
            await self._redis.hset(STATS, registry.instance, orjson.dumps(figures))
        except FAILURES as error:
            log.debug("figures not posted: %s", error)

    async def read(self) -> list[dict[str, Any]]:
        with unavailable("redis stats read failed"):
            found = await self._node_figures(keys=[REGISTRY])
        return [orjson.loads(figures) for figures in found if figures]
