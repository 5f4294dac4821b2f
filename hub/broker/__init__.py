"""Brokers carry events between nodes: in this process, or through Redis."""

from hub.broker.base import Broker, BrokerUnavailable, Deliver, HistoryPage, Outgoing
from hub.broker.memory import MemoryBroker

__all__ = ["Broker", "BrokerUnavailable", "Deliver", "HistoryPage", "MemoryBroker", "Outgoing"]
