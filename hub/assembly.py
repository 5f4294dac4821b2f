"""The composition root: the one place that chooses a node's implementations from the
settings and builds its parts. `HUB_REDIS_URL` picks Redis for the broker, presence, the
figures board, the stream sessions' mailbox, webhooks and the shared rate limits together; a
collector picks OpenTelemetry's tracer. Both are imported only then: a node alone loads
neither the Redis client nor OpenTelemetry."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hub.auth import STATUS_ROOM
from hub.broker import Broker, MemoryBroker
from hub.config import Settings
from hub.figures import Board, MemoryBoard
from hub.limits import Limit
from hub.liveness import HeartbeatWatch
from hub.mailbox import Mailbox, MemoryMailbox, OnRequest, no_sessions
from hub.metrics import Metrics
from hub.node import Node
from hub.presence import MemoryPresence, Presence
from hub.publishing import Publisher
from hub.session_parts import SessionParts, Verify
from hub.stats import Tally
from hub.tracing import Tracer, Untraced, check_tracing
from hub.webhooks.service import Webhooks, memory_webhooks

if TYPE_CHECKING:  # a node alone never loads the Redis client
    from hub.redis.clients import RedisClient


@dataclass(frozen=True, slots=True)
class Parts:
    """A node's chosen parts, started and stopped in their order."""

    run: str
    """This run of the node: its connection ids stay unique when a node restarts under
    the same id."""
    node: Node
    publisher: Publisher
    presence: Presence
    mailbox: Mailbox
    """Stream sessions: which node holds each, and the POSTs forwarded to it."""
    heartbeats: HeartbeatWatch
    board: Board
    tracer: Tracer
    tally: Tally
    broadcasts: Limit | None
    """REST broadcasts per token, shared by the cluster's nodes when there are several."""
    reads: Limit | None
    """REST reads per token, likewise."""
    webhooks: Webhooks
    """The tenants' webhook endpoints, and the messages on their way to them."""

    def for_sessions(self, settings: Settings, metrics: Metrics, verify: Verify) -> SessionParts:
        """What every session uses of these parts, in the one object each session holds."""
        return SessionParts(
            settings,
            settings.node_id,
            self.run,
            self.node,
            self.publisher,
            self.presence,
            self.heartbeats,
            self.tracer,
            metrics,
            self.tally,
            verify,
        )

    async def start(self, on_request: OnRequest = no_sessions) -> None:
        """Start the parts; `on_request` answers the stream requests forwarded to this
        node (see `hub.mailbox.base.OnRequest`)."""
        await self.node.start()
        await self.presence.start()
        await self.mailbox.start(on_request)
        await self.webhooks.start()
        self.heartbeats.start()

    async def stop(self) -> None:
        await self.heartbeats.stop()
        await self.webhooks.stop()
        await self.mailbox.stop()
        await self.presence.stop()
        await self.node.stop()
        await self.tracer.stop()


@dataclass(frozen=True, slots=True)
class _Backends:
    broker: Broker
    presence: Presence
    mailbox: Mailbox
    board: Board
    broadcasts: Limit | None
    reads: Limit | None
    webhooks: Webhooks


def assemble(
    settings: Settings, metrics: Metrics, environ: Mapping[str, str] = os.environ
) -> Parts:
    tally = Tally()
    run = f"{settings.node_id}.{secrets.token_hex(3)}"
    tracer = choose_tracer(settings, environ)
    chosen = (
        _alone(settings, metrics, tally)
        if settings.redis is None
        else _redis(settings, run, metrics, tally)
    )
    retention = settings.retention
    node = Node(chosen.broker, retention, settings.state, metrics, tally, tracer)
    return Parts(
        run=run,
        node=node,
        publisher=Publisher(settings, chosen.broker, retention, metrics, tally),
        presence=chosen.presence,
        mailbox=chosen.mailbox,
        heartbeats=HeartbeatWatch(settings.heartbeat_timeout, settings.shortest_heartbeat_timeout),
        board=chosen.board,
        tracer=tracer,
        tally=tally,
        broadcasts=chosen.broadcasts,
        reads=chosen.reads,
        webhooks=chosen.webhooks,
    )


def choose_tracer(settings: Settings, environ: Mapping[str, str] = os.environ) -> Tracer:
    """OpenTelemetry's tracer when a collector is named, else one that traces nothing."""
    if not check_tracing(settings, environ):
        return Untraced()
    from hub.otel import OpenTelemetryTracer

    return OpenTelemetryTracer(settings)


def _limit(name: str, rate: float, redis: RedisClient | None) -> Limit | None:
    """The limit `name` (its burst is one second of `rate`), shared through `redis` when
    there is one; None when `rate` is 0."""
    if rate <= 0:
        return None
    if redis is None:
        return Limit(name, rate, rate)
    from hub.shared_limits import SharedLimit

    return SharedLimit(name, rate, rate, redis)


def _alone(settings: Settings, metrics: Metrics, tally: Tally) -> _Backends:
    memory = MemoryBroker(settings.tenant_bounds, settings.state.ttl)
    presence = MemoryPresence(memory, settings, settings.retention, tally)
    return _Backends(
        memory,
        presence,
        MemoryMailbox(),
        MemoryBoard(),
        _limit("broadcasts", settings.broadcast_rate, None),
        _limit("reads", settings.read_rate, None),
        memory_webhooks(settings, metrics, memory),
    )


def _redis(settings: Settings, run: str, metrics: Metrics, tally: Tally) -> _Backends:
    from hub.broker.redis import RedisBroker
    from hub.figures.redis import RedisBoard
    from hub.mailbox.redis import RedisMailbox
    from hub.outage import Outage
    from hub.presence.redis import RedisPresence
    from hub.presence.registry import Registry
    from hub.presence.scripts import Scripts
    from hub.redis.clients import clients
    from hub.webhooks.service import redis_webhooks

    deployment = settings.redis
    assert deployment is not None
    retention = settings.retention
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
    return _Backends(
        redis,
        presence,
        RedisMailbox(connections, run, settings.node_ttl, outage),
        board,
        _limit("broadcasts", settings.broadcast_rate, redis.client),
        _limit("reads", settings.read_rate, redis.reader),
        redis_webhooks(settings, metrics, connections, run),
    )
