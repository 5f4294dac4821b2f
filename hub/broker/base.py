"""The one small interface every broker implements: how nodes reach each other."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

Deliver = Callable[[str, bytes], None]
"""Called with a room key and an event's encoded bytes, for every event of a subscribed room."""


class BrokerUnavailable(Exception):
    """The broker cannot take the request now; nothing was published or subscribed."""


class Broker(ABC):
    """Carries encoded events between the nodes that have members in a room.

    A broker never parses what it carries: the bytes published are the bytes delivered.
    """

    @abstractmethod
    async def connect(self, deliver: Deliver) -> None:
        """Start; from now on events of subscribed rooms are handed to `deliver`."""

    @abstractmethod
    async def disconnect(self) -> None:
        """Stop and release every resource."""

    @abstractmethod
    async def subscribe(self, key: str) -> None:
        """Return once every event published to `key` from now on will be delivered."""

    @abstractmethod
    async def unsubscribe(self, key: str) -> None:
        """Stop delivering `key`; this node has no member left in it."""

    @abstractmethod
    async def publish(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """Publish every (key, payload) pair, or none of them (raise `BrokerUnavailable`)."""

    @property
    @abstractmethod
    def available(self) -> bool:
        """Whether the broker can publish and subscribe right now."""
