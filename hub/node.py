"""A node: local rooms joined to the broker. The only place the two meet."""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from hub.broker import Broker, HistoryPage, Outgoing, make_broker
from hub.config import Settings
from hub.history import RetentionRules, id_of, parse_id
from hub.liveness import HeartbeatWatch
from hub.metrics import Metrics
from hub.presence import Presence, make_presence
from hub.protocol import ErrorCode, HubError, Ref, event_frame, ts_of, websocket_text_frame
from hub.rooms import Member, Rooms, room_key
from hub.stats import Tally


@dataclass(frozen=True, slots=True)
class Published:
    ids: dict[str, str | None]
    ts: int


@dataclass(frozen=True, slots=True)
class Subscribed:
    """A live subscription, and the frames that bring its member up to date first."""

    epoch: str
    last: str | None
    recovered: bool
    frames: list[bytes]


class _Seam:
    """Stands in a room for a member while its history is read, then until the live stream
    has passed the last replayed event.

    First it keeps what arrives. Once the history is in, it forwards only events newer
    than the last one replayed (events the history already held may still be on their way
    from the broker), and as soon as one has passed, it gives its place back to the member.
    """

    __slots__ = ("_after", "_frames", "_member", "_settle")

    def __init__(self, member: Member, settle: Callable[[_Seam], None]) -> None:
        self._member = member
        self._settle: Callable[[_Seam], None] | None = settle
        self._frames: list[bytes] | None = []
        self._after: tuple[int, int] | None = None

    def deliver(self, joined: bytes, frames: Sequence[bytes]) -> None:
        for frame in frames:
            self.send(frame)

    def send(self, frame: bytes) -> None:
        if self._frames is not None:
            self._frames.append(frame)
            return
        if self._after is not None and id_of(frame) <= self._after:
            return
        self._member.send(frame)
        self._after = None
        settle, self._settle = self._settle, None
        if settle is not None:
            settle(self)

    def release(self, after: tuple[int, int] | None) -> list[bytes]:
        """Switch to forwarding; return the kept events newer than `after`."""
        kept, self._frames = self._frames or [], None
        self._after = after
        return [frame for frame in kept if after is None or id_of(frame) > after]


class Node:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.id = settings.node_id
        self.retention = RetentionRules.parse(
            settings.history_size, settings.history_ttl, settings.history_rooms
        )
        self.broker: Broker = make_broker(settings, self.retention)
        self.metrics = metrics
        self.tally = Tally()
        self.rooms = Rooms()
        # Connection ids stay unique when a node restarts under the same id.
        self._run = f"{self.id}.{secrets.token_hex(3)}"
        self.presence: Presence = make_presence(
            settings, self.broker, self.retention, self._run, metrics, self.tally
        )
        self.heartbeats = HeartbeatWatch(settings.heartbeat_timeout)
        self._subscribing: dict[str, asyncio.Future[None]] = {}
        self._seams: dict[tuple[str, Member], _Seam] = {}
        self._conn_ids = itertools.count(1)
        self._arrived: list[tuple[str, bytes]] = []

    async def start(self) -> None:
        await self.broker.connect(self._deliver)
        await self.presence.start()
        self.heartbeats.start()

    async def stop(self) -> None:
        await self.heartbeats.stop()
        await self.presence.stop()
        await self.broker.disconnect()

    def next_conn_id(self) -> str:
        return f"{self._run}.{next(self._conn_ids)}"

    def _deliver(self, key: str, payload: bytes) -> None:
        """Take an event from the broker; fan it out with the others of this loop turn."""
        if not self._arrived:
            asyncio.get_running_loop().call_soon(self._fan_out)
        self._arrived.append((key, payload))

    def _fan_out(self) -> None:
        """Hand this turn's events to the local members, room by room in arrival order.

        Events that arrive together (a burst read from Redis in one go, publishes handled
        in the same turn) then reach each socket in one write instead of one each.
        """
        arrived, self._arrived = self._arrived, []
        by_room: dict[str, list[bytes]] = {}
        for key, payload in arrived:
            by_room.setdefault(key, []).append(payload)
        observe = self.metrics.delivery_latency.observe
        for key, payloads in by_room.items():
            delivered = self.rooms.fan_out(key, payloads)
            if delivered:
                self.tally.messages_out += delivered
                written = time.time()
                for payload in payloads:
                    observe(written - ts_of(payload) / 1000)

    async def join(self, key: str, member: Member) -> None:
        """Add `member` to a room; return once the room's events reach this node.

        The first local member subscribes the node through the broker; members arriving
        meanwhile wait for that same subscription. On `BrokerUnavailable` the member is
        taken out again and the error propagates.
        """
        if self.rooms.add(key, member):
            pending = asyncio.get_running_loop().create_future()
            self._subscribing[key] = pending
            try:
                await self.broker.subscribe(key)
            except Exception as error:
                pending.set_exception(error)
                pending.exception()
                await self.leave(key, member)
                raise
            else:
                pending.set_result(None)
            finally:
                del self._subscribing[key]
            return
        waiting = self._subscribing.get(key)
        if waiting is not None:
            try:
                await waiting
            except Exception:
                await self.leave(key, member)
                raise

    async def leave(self, key: str, member: Member) -> None:
        seam = self._seams.pop((key, member), None)
        if self.rooms.remove(key, seam or member):
            await self.broker.unsubscribe(key)

    async def subscribe(
        self, key: str, member: Member, since: str | None, epoch: str | None
    ) -> Subscribed:
        """Join a room, replaying what `member` missed after `since` without gap or repeat.

        A stand-in joins first, so events published from then on are kept; the history
        read that follows holds every earlier one. The stand-in is then swapped for the
        member in one step, and kept events the history already had are dropped by id.
        """
        seam = _Seam(member, lambda done: self._settle(key, member, done))
        present = self._seams.get((key, member)) or (
            member if self.rooms.has(key, member) else None
        )
        if present is not None:
            self.rooms.swap(key, present, seam)
            self._seams[key, member] = seam
        else:
            self._seams[key, member] = seam
            try:
                await self.join(key, seam)
            except Exception:
                self._seams.pop((key, member), None)
                raise
        size = self.retention.for_room(key.partition(":")[2]).size
        try:
            page = await self.history(key, since, size if since is not None else 0)
        except Exception:
            for frame in seam.release(None):
                member.send(frame)
            raise
        if size <= 0:
            return Subscribed(page.epoch, page.last, False, seam.release(None))
        frames = [websocket_text_frame(event) for event in page.events]
        if page.events:
            after: tuple[int, int] | None = id_of(page.events[-1])
        elif since is not None:
            after = parse_id(since)
        else:
            after = parse_id(page.last) if page.last else None
        frames += seam.release(after)
        return Subscribed(page.epoch, page.last, _recovered(page, since, epoch), frames)

    def _settle(self, key: str, member: Member, seam: _Seam) -> None:
        """Give a seam's place back to its member, outside any fan-out loop."""

        def swap() -> None:
            if self._seams.get((key, member)) is seam:
                del self._seams[key, member]
                self.rooms.swap(key, seam, member)

        asyncio.get_running_loop().call_soon(swap)

    async def history(self, key: str, since: str | None, limit: int) -> HistoryPage:
        return await self.broker.history(key, since, limit)

    async def publish(
        self, tenant: str, rooms: Sequence[str], event: str, data: Any, ref: Ref = None
    ) -> Published:
        return await self.publish_soon(tenant, rooms, event, data, ref)

    def publish_soon(
        self, tenant: str, rooms: Sequence[str], event: str, data: Any, ref: Ref = None
    ) -> asyncio.Future[Published]:
        """Encode the event once per room and hand it to the broker now, for every room or
        for none; the future resolves once it is published."""
        ts = int(time.time() * 1000)
        limit = self.settings.max_event_bytes
        messages = []
        for room in rooms:
            payload = event_frame(room, event, data, ts, None)
            if len(payload) > limit:
                raise HubError(
                    ErrorCode.TOO_LARGE, f"event is {len(payload)} bytes, limit {limit}", ref
                )
            messages.append(
                Outgoing.of(room_key(tenant, room), payload, self.retention.for_room(room))
            )
        sent = self.broker.publish_soon(messages)
        published: asyncio.Future[Published] = asyncio.get_running_loop().create_future()

        def done(sent: asyncio.Future[list[str | None]]) -> None:
            if published.cancelled():
                return
            error = sent.exception()
            if error is not None:
                published.set_exception(error)
                return
            self.tally.messages_in += len(messages)
            published.set_result(Published(dict(zip(rooms, sent.result(), strict=True)), ts))

        sent.add_done_callback(done)
        return published


def _recovered(page: HistoryPage, since: str | None, epoch: str | None) -> bool:
    """True only when the client named the same epoch and nothing after `since` was dropped."""
    if since is None or epoch != page.epoch:
        return False
    position = parse_id(since)
    return position is not None and position >= page.trimmed
