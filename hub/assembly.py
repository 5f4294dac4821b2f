"""Builds a node's parts from the settings: the one place that knows which broker,
presence and figures board go together (`HUB_REDIS_URL` picks Redis for all three)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hub.auth import STATUS_ROOM
from hub.broker import Broker, MemoryBroker
from hub.config import Settings
from hub.figures import Board, MemoryBoard
from hub.metrics import Metrics
from hub.node import Node
from hub.presence import MemoryPresence, Presence
from hub.stats import Tally
from hub.tracing import tracer_for

if TYPE_CHECKING:  # a node alone never loads the Redis client
    from hub.redis.clients import RedisClient


@dataclass(frozen=True, slots=True)
class Parts:
    """What the app needs of a node's parts: the node, the board its figures go to, and
    where limits are shared (None: this node alone)."""

    node: Node
    board: Board
    writes: RedisClient | None = None
    reads: RedisClient | None = None


def assemble(settings: Settings, metrics: Metrics) -> Parts:
    retention = settings.retention
    tally = Tally()
    # Connection ids stay unique when a node restarts under the same id.
    run = f"{settings.node_id}.{secrets.token_hex(3)}"
    broker: Broker
    presence: Presence
    board: Board
    tracer = tracer_for(settings)
    deployment = settings.redis
    if deployment is None:
        memory = MemoryBroker(settings.tenant_bounds, settings.state.ttl)
        broker, board = memory, MemoryBoard()
        presence = MemoryPresence(memory, settings, retention, tally)
        return Parts(
            Node(settings, run, broker, presence, retention, metrics, tally, tracer), board
        )
    from hub.redis.clients import clients
    from hub.broker.redis import RedisBroker
    from hub.figures.redis import RedisBoard
    from hub.outage import Outage
    from hub.presence.redis import RedisPresence
    from hub.presence.registry import Registry
    from hub.presence.scripts import Scripts

    connections = clients(deployment, settings.redis_read_connections)
    outage = Outage(settings.redis_sentinels or deployment.url)
    redis = RedisBroker(
        connections, settings.tenant_bounds, settings.state.ttl_ms, outage, run, metrics
    )
    sharded = connections.sharded
    scripts = Scripts(redis.client, sharded)
    status = retention.for_room(STATUS_ROOM)
    registry = Registry(redis.client, scripts, run, settings, status, metrics)
    board = RedisBoard(redis.client, Scripts(redis.reader, sharded), registry)
    presence = RedisPresence(
        redis.client,
        redis.reader,
        scripts,
        registry,
        settings,
        retention,
        tally,
        metrics,
        outage,
    )
    node = Node(settings, run, redis, presence, retention, metrics, tally, tracer)
    return Parts(node, board, redis.client, redis.reader)
