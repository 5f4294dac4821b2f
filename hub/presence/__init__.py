"""Presence and the device lifecycle; the broker setting (`HUB_REDIS_URL`) picks where."""

from __future__ import annotations

from hub.broker import Broker, MemoryBroker
from hub.config import Settings
from hub.history import RetentionRules
from hub.metrics import Metrics
from hub.presence.base import Gone, Member, Presence, Present
from hub.presence.memory import MemoryPresence
from hub.stats import Tally

__all__ = ["Gone", "Member", "MemoryPresence", "Presence", "Present", "make_presence"]


def make_presence(
    settings: Settings,
    broker: Broker,
    retention: RetentionRules,
    run: str,
    metrics: Metrics,
    tally: Tally,
) -> Presence:
    """Presence that lives where `broker` carries events: in this process, or in Redis."""
    if isinstance(broker, MemoryBroker):
        return MemoryPresence(broker, settings, retention, tally)
    from hub.broker.redis import RedisBroker
    from hub.presence.redis import RedisPresence

    assert isinstance(broker, RedisBroker)
    return RedisPresence(broker, run, settings, retention, tally, metrics)
