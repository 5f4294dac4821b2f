"""The in-process broker: a single node, nothing else running.

As in Redis, only publishes make a room's history, and a room whose events have all aged
out is forgotten, so reading free-named rooms holds nothing.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from hub import envelope
from hub.broker.base import (
    Accepted,
    Broker,
    Claim,
    Deliver,
    HistoryPage,
    IdempotencyConflict,
    Lost,
    Outgoing,
    OutgoingReceipt,
    Replay,
    Sent,
)
from hub.envelope import ID_END
from hub.errors import HubError
from hub.history import Retention, TenantBounds, format_id, parse_id
from hub.ratelimit import KeyedBuckets
from hub.rooms import RoomKey

_NONE = (0, 0)
SWEEP_INTERVAL = 60.0
"""Seconds between sweeps of rooms whose history has aged out."""
MAX_CLAIMED_KEYS = 20_000
MAX_CLAIMED_IDS = 100_000
"""The idempotency keys this process remembers, all tenants' together, and the ids they
may hold (a key holds one per room of its broadcast): past either, the oldest keys are
forgotten before they expire, so a retry of those would publish again. About 20 MB at
most."""


@dataclass(slots=True)
class _Room:
    """One room's history in this process."""

    trimmed: tuple[int, int] = _NONE
    until: float = 0.0
    """When the room's newest event ages out: from then on the room is forgotten."""
    events: deque[tuple[tuple[int, int], bytes, float]] = field(default_factory=deque)
    last: tuple[int, int] = _NONE


@dataclass(slots=True)
class _Receipts:
    """One event's latest receipt of each principal, forgotten when the event would be."""

    until: float
    records: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Claimed:
    digest: str
    answer: Replay
    until: float


class _Claims:
    """The idempotency keys claimed in this process, oldest first, within
    `MAX_CLAIMED_KEYS` and `MAX_CLAIMED_IDS`. Every claim of a process has the same ttl,
    so the oldest is also the first to expire."""

    def __init__(self, keys: int = MAX_CLAIMED_KEYS, ids: int = MAX_CLAIMED_IDS) -> None:
        self._most_keys, self._most_ids = keys, ids
        self._claimed: OrderedDict[tuple[str, str], _Claimed] = OrderedDict()
        self._ids = 0

    def seen(self, tenant: str, claim: Claim) -> Replay | None:
        """The first answer for the tenant's key; None when the key is not claimed."""
        self._forget(time.monotonic())
        claimed = self._claimed.get((tenant, claim.key))
        if claimed is None:
            return None
        if claimed.digest != claim.digest:
            raise IdempotencyConflict()
        return claimed.answer

    def store(self, tenant: str, claim: Claim, accepted: Accepted) -> None:
        until = time.monotonic() + claim.ttl_ms / 1000
        ids = accepted.ids
        answer = Replay(ids, claim.ts, accepted.reach)
        self._claimed[tenant, claim.key] = _Claimed(claim.digest, answer, until)
        self._ids += len(ids)
        self._forget(time.monotonic())

    def _forget(self, now: float) -> None:
        """Drop the expired keys, and the oldest beyond the bound."""
        claimed = self._claimed
        while claimed:
            oldest = next(iter(claimed.values()))
            within = len(claimed) <= self._most_keys and self._ids <= self._most_ids
            if oldest.until > now and within:
                return
            claimed.popitem(last=False)
            self._ids -= len(oldest.answer.ids)


class _Taps:
    """Listeners to a room name of every tenant, told of each event as it is published: how
    the webhooks of a node alone read the `status` rooms without a socket in them."""

    def __init__(self) -> None:
        self._listeners: dict[str, Deliver] = {}

    def set(self, room: str, listener: Deliver | None) -> None:
        if listener is None:
            self._listeners.pop(room, None)
        else:
            self._listeners[room] = listener

    def tell(self, encoded: list[tuple[RoomKey, bytes]]) -> None:
        """Hand each published event to the listener of its room's name, if any."""
        if not self._listeners:
            return
        for key, payload in encoded:
            listener = self._listeners.get(key.room)
            if listener is not None:
                listener(key, payload)


class MemoryBroker(Broker):
    """Keeps history in this process and delivers each publish straight to its rooms."""

    def __init__(self, bounds: TenantBounds | None = None, state_ttl: float = math.inf) -> None:
        self._bounds = bounds or TenantBounds(0, 0, 0)
        self._state_ttl = state_ttl
        self._receipts: dict[tuple[RoomKey, tuple[int, int]], _Receipts] = {}
        self._state: dict[RoomKey, dict[str, tuple[bytes, float]]] = {}
        """Per room, each state event name to its newest event and when it is forgotten."""
        self._bytes = (
            KeyedBuckets(self._bounds.publish_bytes, self._bounds.publish_burst)
            if self._bounds.publish_bytes > 0
            else None
        )
        self._history_rooms: dict[str, dict[RoomKey, float]] = {}
        """Per tenant, its rooms with history and when that history expires."""
        self._deliver: Deliver | None = None
        self._keys: set[RoomKey] = set()
        self._epoch = uuid.uuid4().hex[:12]
        """Every room's epoch: this process's history is lost with it."""
        self._rooms: dict[RoomKey, _Room] = {}
        self._sweep_at = time.time() + SWEEP_INTERVAL
        self._claims = _Claims()
        self._reach: Callable[[RoomKey], int] = _nobody
        self._taps = _Taps()

    def counting(self, reach: Callable[[RoomKey], int]) -> None:
        """Count each publish's reach with `reach` (presence's members of a room)."""
        self._reach = reach

    def tap(self, room: str, listener: Deliver | None) -> None:
        """Hand `listener` too every event published to a room named `room`, of any
        tenant, as it is published (None stops it): the webhooks of a node alone read the
        `status` rooms so."""
        self._taps.set(room, listener)

    async def connect(self, deliver: Deliver, lost: Lost) -> None:  # noqa: ARG002
        """Nothing is ever lost in the process."""
        self._deliver = deliver

    async def disconnect(self) -> None:
        self._deliver = None
        self._keys.clear()

    async def subscribe(self, key: RoomKey) -> None:
        self._keys.add(key)

    async def unsubscribe(self, key: RoomKey) -> None:
        self._keys.discard(key)

    def publish_soon(
        self, messages: Sequence[Outgoing], claim: Claim | None = None, trace: bytes = b""
    ) -> asyncio.Future[Sent]:
        published: asyncio.Future[Sent] = asyncio.get_running_loop().create_future()
        try:
            published.set_result(self._publish(messages, claim, trace))
        except HubError as refusal:
            published.set_exception(refusal)
        return published

    def _publish(self, messages: Sequence[Outgoing], claim: Claim | None, trace: bytes) -> Sent:
        """Check the key, the bounds, then publish and store the key, without yielding to
        the loop: a concurrent request with the same key finds it stored."""
        tenant = messages[0].key.tenant
        if claim is not None:
            replay = self._claims.seen(tenant, claim)
            if replay is not None:
                return replay
        verdict = self._bounded(messages)
        if verdict is not None:
            raise self._bounds.refusal(verdict)
        reach = [self._reach(message.key) for message in messages]
        accepted = Accepted(self.publish_now(messages, trace), reach)
        if claim is not None:
            self._claims.store(tenant, claim, accepted)
        return accepted

    def _bounded(self, messages: Sequence[Outgoing]) -> str | None:
        """What the tenant's bounds say of these events (all of one tenant), as the Redis
        script says it; None when they may go."""
        tenant, bounds = messages[0].key.tenant, self._bounds
        now = time.time()
        rooms = self._history_rooms.setdefault(tenant, {})
        for key in [key for key, until in rooms.items() if until <= now]:
            del rooms[key]
        spans = [(m.key, self._kept_for(m)) for m in messages]
        kept = {key: now + span for key, span in spans if span > 0}
        new = len(kept.keys() - rooms.keys())
        if bounds.history_rooms and new and len(rooms) + new > bounds.history_rooms:
            return "rooms"
        if self._bytes is not None:
            cost = sum(len(m.prefix) + len(m.suffix) for m in messages)
            wait = self._bytes.take_many(tenant, cost)
            if wait > 0:
                return f"bytes:{int(wait * 1000) + 1}"
        rooms.update(kept)
        return None

    def _kept_for(self, message: Outgoing) -> float:
        """How long a publish makes its room hold something: history, state or both."""
        span = message.retention.ttl if message.retention.keeps_history else 0.0
        return max(span, self._state_ttl) if message.state is not None else span

    def publish_now(self, messages: Sequence[Outgoing], trace: bytes = b"") -> list[str | None]:
        """Publish without yielding to the loop: in-process events are ordered by call."""
        ids: list[str | None] = []
        encoded: list[tuple[RoomKey, bytes]] = []
        now = time.time()
        if now >= self._sweep_at:
            self._sweep(now)
        for message in messages:
            retention = message.retention
            if not retention.keeps_history:
                ids.append(None)
                encoded.append((message.key, message.prefix + message.suffix))
                self._keep_state(message, encoded[-1][1], now)
                continue
            room = self._live(message.key, now)
            if room is None:
                room = self._rooms[message.key] = _Room()
            self._trim(room, now, retention.size - 1)
            ms = int(now * 1000)
            event_id = (ms, 0) if ms > room.last[0] else (room.last[0], room.last[1] + 1)
            room.last = event_id
            room.until = now + retention.ttl
            text = format_id(event_id)
            room.events.append((event_id, message.prefix, now + retention.ttl))
            ids.append(text)
            encoded.append((message.key, message.prefix + text.encode() + message.suffix))
            self._keep_state(message, encoded[-1][1], now)
        deliver = self._deliver
        if deliver is not None:
            for key, payload in encoded:
                if key in self._keys:
                    deliver(key, envelope.traced(trace, payload) if trace else payload)
        self._taps.tell(encoded)
        return ids

    def receipt_soon(self, receipt: OutgoingReceipt) -> asyncio.Future[bool]:
        stored: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        stored.set_result(self._receive(receipt))
        return stored

    def _receive(self, receipt: OutgoingReceipt) -> bool:
        now = time.time()
        room = self._live(receipt.key, now)
        event_id = parse_id(receipt.event_id)
        if room is None or event_id is None or not _holds(room, event_id, now):
            return False
        place = (receipt.key, event_id)
        kept = self._receipts.get(place)
        if kept is None:
            until = max(event_id[0] / 1000 + receipt.ttl_ms / 1000, now)
            kept = self._receipts[place] = _Receipts(until)
        kept.records[receipt.principal] = receipt.record
        self.publish_now([receipt.announce])
        return True

    async def receipts(self, key: RoomKey, event_id: str) -> list[bytes]:
        parsed = parse_id(event_id)
        kept = self._receipts.get((key, parsed)) if parsed is not None else None
        if kept is None or kept.until <= time.time():
            return []
        return list(kept.records.values())

    def _keep_state(self, message: Outgoing, event: bytes, now: float) -> None:
        if message.state is not None:
            kept = self._state.setdefault(message.key, {})
            kept[message.state] = (event, now + self._state_ttl)

    def _state_of(self, key: RoomKey) -> list[bytes]:
        kept = self._state.get(key)
        return [event for event, _ in kept.values()] if kept else []

    async def states(self, keys: Sequence[RoomKey]) -> list[list[bytes]]:
        return [self._state_of(key) for key in keys]

    async def history(
        self,
        key: RoomKey,
        since: str | None,
        limit: int,
        retention: Retention,
        *,
        state: bool = False,
    ) -> HistoryPage:
        now = time.time()
        room = self._live(key, now)
        kept = self._state_of(key) if state else []
        if room is None:
            return HistoryPage(self._epoch, [], None, _NONE, state=kept)
        self._trim(room, now, retention.size)
        after = parse_id(since) if since is not None else _NONE
        events: list[bytes] = []
        if after is not None and limit > 0:
            for event_id, prefix, _ in room.events:
                if event_id > after:
                    events.append(prefix + format_id(event_id).encode() + ID_END)
                    if len(events) >= limit:
                        break
        last = format_id(room.last) if room.events else None
        held = after is not None and any(event_id == after for event_id, _, _ in room.events)
        return HistoryPage(self._epoch, events, last, room.trimmed, kept, held)

    def _live(self, key: RoomKey, now: float) -> _Room | None:
        """The room's history, unless it has none or all of it has aged out."""
        room = self._rooms.get(key)
        if room is not None and room.until <= now:
            del self._rooms[key]
            return None
        return room

    def _sweep(self, now: float) -> None:
        self._sweep_at = now + SWEEP_INTERVAL
        for key in [key for key, room in self._rooms.items() if room.until <= now]:
            del self._rooms[key]
        for place in [place for place, kept in self._receipts.items() if kept.until <= now]:
            del self._receipts[place]
        for key, kept in list(self._state.items()):
            for name in [name for name, (_, until) in kept.items() if until <= now]:
                del kept[name]
            if not kept:
                del self._state[key]

    @staticmethod
    def _trim(room: _Room, now: float, keep: int) -> None:
        """Drop events past their age, and the oldest beyond `keep`; remember the newest
        dropped id, which decides whether a resume is complete."""
        events = room.events
        while events and (len(events) > keep or events[0][2] <= now):
            room.trimmed = events.popleft()[0]

    @property
    def available(self) -> bool:
        return self._deliver is not None


def _holds(room: _Room, event_id: tuple[int, int], now: float) -> bool:
    """Whether the room's history still has the event (its events are in id order)."""
    events = room.events
    at = bisect.bisect_left(events, (event_id,))
    return at < len(events) and events[at][0] == event_id and events[at][2] > now


def _nobody(_key: RoomKey) -> int:
    """The reach of every room while no presence counts it."""
    return 0
