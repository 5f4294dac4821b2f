"""Brokers carry events between nodes; one setting (`HUB_REDIS_URL`) picks which."""

from __future__ import annotations

from hub.broker.base import Broker, BrokerUnavailable, Deliver, HistoryPage, Outgoing
from hub.broker.memory import MemoryBroker
from hub.config import Settings
from hub.history import RetentionRules

__all__ = [
    "Broker",
    "BrokerUnavailable",
    "Deliver",
    "HistoryPage",
    "MemoryBroker",
    "Outgoing",
    "make_broker",
]


def make_broker(settings: Settings, retention: RetentionRules) -> Broker:
    if settings.redis_url is None:
        return MemoryBroker()
    from hub.broker.redis import RedisBroker

    return RedisBroker(settings.redis_url, retention)
