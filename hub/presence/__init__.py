"""Presence and the device lifecycle; the broker setting (`HUB_REDIS_URL`) picks where."""

from __future__ import annotations

from hub.broker import Broker, MemoryBroker
from hub.config import Settings
from hub.history import RetentionRules
from hub.metrics import Metrics
from hub.presence.base import Gone, Member, Presence, Present
from hub.presence.memory import MemoryPresence

__all__ = ["Gone", "Member", "MemoryPresence", "Presence", "Present", "make_presence"]


def make_presence(
    settings: Settings, broker: Broker, retention: RetentionRules, run: str, metrics: Metrics
) -> Presence:
    """Presence that lives where `broker` carries events: in this process, or in Redis."""
    node, limit = settings.node_id, settings.max_event_bytes
    if isinstance(broker, MemoryBroker):
        return MemoryPresence(broker, node, retention, limit)
    from hub.broker.redis import RedisBroker
    from hub.presence.redis import RedisPresence

    assert isinstance(broker, RedisBroker)
    return RedisPresence(broker, node, run, retention, limit, settings.node_ttl, metrics)
