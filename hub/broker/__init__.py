"""Brokers carry events between nodes: in this process, or through Redis."""

from hub.broker.base import Broker, Deliver, HistoryPage, Outgoing
from hub.broker.memory import MemoryBroker
from hub.errors import BrokerUnavailable

__all__ = ["Broker", "BrokerUnavailable", "Deliver", "HistoryPage", "MemoryBroker", "Outgoing"]
