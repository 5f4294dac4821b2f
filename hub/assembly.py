"""Builds a node's parts from the settings: the one place that knows which broker,
presence and figures board go together (`HUB_REDIS_URL` picks Redis for all three)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from redis.asyncio import Redis

from hub.auth import STATUS_ROOM
from hub.broker import Broker, MemoryBroker
from hub.config import Settings
from hub.figures import Board, MemoryBoard
from hub.metrics import Metrics
from hub.node import Node
from hub.presence import MemoryPresence, Presence
from hub.stats import Tally


@dataclass(frozen=True, slots=True)
class Parts:
    """What the app needs of a node's parts: the node, the board its figures go to, and
    where limits are shared (None: this node alone)."""

    node: Node
    board: Board
    writes: Redis | None = None
    reads: Redis | None = None


def assemble(settings: Settings, metrics: Metrics) -> Parts:
    retention = settings.retention
    tally = Tally()
    # Connection ids stay unique when a node restarts under the same id.
    run = f"{settings.node_id}.{secrets.token_hex(3)}"
    broker: Broker
    presence: Presence
    board: Board
    if settings.redis_url is None:
        memory = MemoryBroker(settings.tenant_bounds, settings.state.ttl)
        broker, board = memory, MemoryBoard()
        presence = MemoryPresence(memory, settings, retention, tally)
    else:
        from hub.broker.redis import RedisBroker
        from hub.figures.redis import RedisBoard
        from hub.presence.redis import RedisPresence
        from hub.presence.registry import Registry
        from hub.presence.scripts import Scripts

        redis = RedisBroker(
            settings.redis_url,
            settings.tenant_bounds,
            settings.state.ttl_ms,
            settings.redis_read_connections,
        )
        scripts = Scripts(redis.client)
        registry = Registry(scripts, run, settings, retention.for_room(STATUS_ROOM), metrics)
        broker, board = redis, RedisBoard(redis.client, Scripts(redis.reader), registry)
        presence = RedisPresence(
            redis.client,
            redis.reader,
            scripts,
            registry,
            settings,
            retention,
            tally,
            metrics,
            redis.outage,
        )
        node = Node(settings, run, broker, presence, retention, metrics, tally)
        return Parts(node, board, redis.client, redis.reader)
    return Parts(Node(settings, run, broker, presence, retention, metrics, tally), board)
