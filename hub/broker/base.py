"""The one small interface every broker implements: how nodes reach each other."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from hub import envelope
from hub.errors import ErrorCode, HubError
from hub.history import Retention, parse_id
from hub.rooms import RoomKey

Deliver = Callable[[RoomKey, bytes], None]
"""Called with a room and an event's encoded bytes, for every event of a subscribed room."""
Lost = Callable[[list[RoomKey]], None]
"""Called with rooms the broker stopped carrying unasked: their events published from then
on do not arrive, so their members must resume."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One event for one room: `prefix + id + suffix` are its bytes once it has an id."""

    key: RoomKey
    prefix: bytes
    suffix: bytes
    retention: Retention
    state: str | None = None
    """The event's name when it is state: the room keeps it as the newest of that name."""

    @classmethod
    def of(
        cls, key: RoomKey, payload: bytes, retention: Retention, state: str | None = None
    ) -> Outgoing:
        """`payload` is an encoded event without its id, to be cut where the id goes."""
        prefix, suffix = envelope.parts(payload, keeps_history=retention.keeps_history)
        return cls(key, prefix, suffix, retention, state)


@dataclass(frozen=True, slots=True)
class Claim:
    """An `Idempotency-Key` a publish claims for its tenant.

    The first publish with a key stores, in the same atomic step as it publishes, what
    rebuilds its answer (the digest of its request, its ids and its `ts`) for `ttl_ms`.
    Later publishes with the key publish nothing: the same digest is answered with a
    `Replay`, another one is refused with `IdempotencyConflict`. Refused publishes store
    nothing.
    """

    key: str
    digest: str
    """sha256 of the request's body, in hex."""
    ts: int
    """The `ts` the events were encoded with: the answer's, replayed with it."""
    ttl_ms: int


@dataclass(slots=True)
class Accepted:
    """A publish done: each room's id (None without history) and reach, in its order. Not
    frozen: made for every publish, and a frozen dataclass takes twice as long to make."""

    ids: list[str | None]
    reach: list[int]
    """How many sockets of the cluster were in each room as the event was published, as
    presence knew them."""


@dataclass(frozen=True, slots=True)
class Replay:
    """The answer of the publish that claimed a key first: nothing was published now."""

    ids: list[str | None]
    ts: int
    reach: list[int]


Sent = Accepted | Replay
"""What a publish resolves to, or, for a claim already made, the first answer."""


class IdempotencyConflict(HubError):
    """A claim of a key the tenant already used for a request with another body."""

    def __init__(self) -> None:
        super().__init__(ErrorCode.CONFLICT, "Idempotency-Key already used with another body")


@dataclass(frozen=True, slots=True)
class OutgoingReceipt:
    """A principal's receipt of event `event_id` of room `key`: stored (the principal's
    latest for that event replaces its earlier ones) and published to `status` as
    `announce`, in one atomic step, only while the event is in the room's history."""

    key: RoomKey
    event_id: str
    principal: str
    """`<role> <sub>`: whose receipt it is."""
    record: bytes
    """What `GET .../receipts` lists for the principal."""
    ttl_ms: int
    """The room's history TTL: the receipts of an event are kept as long as it would be."""
    announce: Outgoing


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
    state: list[bytes] = field(default_factory=list)
    """The room's state events as kept (some perhaps past `HUB_STATE_TTL`, see
    `hub.state.snapshot`), when asked for."""
    held: bool = False
    """The history still holds the event the read's `since` names."""

    def recovers(self, since: str | None, epoch: str | None) -> bool:
        """Whether this page, read after `since`, is everything its reader missed: the
        same epoch, and nothing after `since` dropped or lost.

        `0-0` (nothing seen yet) is recovered while nothing was dropped. Any other id must
        be the newest one retention dropped or one the history holds: an id of a history
        that aged out whole, or of events a failed-over Redis lost, is not.
        """
        if since is None or epoch != self.epoch:
            return False
        position = parse_id(since)
        if position is None or position < self.trimmed:
            return False
        return position in ((0, 0), self.trimmed) or self.held


class Broker(ABC):
    """Carries encoded events between the nodes that have members in a room, and keeps
    each room's recent events.

    A broker never parses what it carries: the bytes published are the bytes delivered
    (with the publisher's trace context in front, when it sent one).
    Appending to a room's history and publishing to its members are one atomic step, so
    every node sees a room's events in id order.
    """

    @abstractmethod
    async def connect(self, deliver: Deliver, lost: Lost) -> None:
        """Start; from now on events of subscribed rooms are handed to `deliver`, and
        subscriptions the broker loses are told to `lost`."""

    @abstractmethod
    async def disconnect(self) -> None:
        """Stop and release every resource."""

    @abstractmethod
    async def subscribe(self, key: RoomKey) -> None:
        """Return once every event published to `key` from now on will be delivered."""

    @abstractmethod
    async def unsubscribe(self, key: RoomKey) -> None:
        """Stop delivering `key`; this node has no member left in it."""

    @abstractmethod
    def publish_soon(
        self, messages: Sequence[Outgoing], claim: Claim | None = None, trace: bytes = b""
    ) -> asyncio.Future[Sent]:
        """Take the events now, in call order, and publish every one or none: the future
        gives their ids (None where the room keeps no history) or `BrokerUnavailable`.
        With a `claim`, checking the key and publishing are one atomic step (see `Claim`).
        A `trace` goes in front of the events delivered (`envelope.traced`), and nowhere
        else.

        Taking them now, without awaiting, is what lets one socket have several publishes
        in flight and still have them published in the order it sent them.
        """

    @abstractmethod
    async def history(
        self,
        key: RoomKey,
        since: str | None,
        limit: int,
        retention: Retention,
        *,
        state: bool = False,
    ) -> HistoryPage:
        """Up to `limit` retained events after `since` (from the oldest when None), and
        with `state` the room's state events, read in the same atomic step."""

    @abstractmethod
    async def states(self, keys: Sequence[RoomKey]) -> list[list[bytes]]:
        """The state events each room keeps (as `HistoryPage.state`), in one read."""

    @abstractmethod
    def receipt_soon(self, receipt: OutgoingReceipt) -> asyncio.Future[bool]:
        """Take a receipt now; the future gives whether its event was still in the room's
        history (and so it was stored and announced), or `BrokerUnavailable`."""

    @abstractmethod
    async def receipts(self, key: RoomKey, event_id: str) -> list[bytes]:
        """The latest receipt record of each principal for one event."""

    @property
    @abstractmethod
    def available(self) -> bool:
        """Whether the broker can publish and subscribe right now."""
