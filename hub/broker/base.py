"""The one small interface every broker implements: how nodes reach each other."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hub.history import Retention, split_for_id

Deliver = Callable[[str, bytes], None]
"""Called with a room key and an event's encoded bytes, for every event of a subscribed room."""


class BrokerUnavailable(Exception):
    """The broker cannot take the request now; nothing was published or subscribed."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One event for one room: `prefix + id + suffix` are its bytes once it has an id."""

    key: str
    prefix: bytes
    suffix: bytes
    retention: Retention

    @classmethod
    def of(cls, key: str, payload: bytes, retention: Retention) -> Outgoing:
        """`payload` is an encoded event without its id, to be cut where the id goes."""
        prefix, suffix = split_for_id(payload) if retention.size > 0 else (payload, b"")
        return cls(key, prefix, suffix, retention)


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """What a room's history holds after some id."""

    epoch: str
    events: list[bytes]
    """Encoded events, oldest first."""
    last: str | None
    """The room's newest id."""
    trimmed: tuple[int, int]
    """The newest id retention has dropped: events after it are all still there."""


class Broker(ABC):
    """Carries encoded events between the nodes that have members in a room, and keeps
    each room's recent events.

    A broker never parses what it carries: the bytes published are the bytes delivered.
    Appending to a room's history and publishing to its members are one atomic step, so
    every node sees a room's events in id order.
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
    def publish_soon(self, messages: Sequence[Outgoing]) -> asyncio.Future[list[str | None]]:
        """Take the events now, in call order, and publish every one or none: the future
        gives their ids (None where the room keeps no history) or `BrokerUnavailable`.

        Taking them now, without awaiting, is what lets one socket have several publishes
        in flight and still have them published in the order it sent them.
        """

    async def publish(self, messages: Sequence[Outgoing]) -> list[str | None]:
        return await self.publish_soon(messages)

    @abstractmethod
    async def history(self, key: str, since: str | None, limit: int) -> HistoryPage:
        """Up to `limit` retained events after `since` (from the oldest when None)."""

    @property
    @abstractmethod
    def available(self) -> bool:
        """Whether the broker can publish and subscribe right now."""
