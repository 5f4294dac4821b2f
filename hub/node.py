"""A node: local rooms joined to the broker. The only place the two meet."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import orjson

from hub import envelope
from hub.auth import STATUS_ROOM
from hub.broker import Broker, HistoryPage, Outgoing
from hub.broker.base import Claim, IdempotencyConflict, OutgoingReceipt, Replay, Sent
from hub.config import Settings
from hub.disconnect import BROKER_LOST
from hub.errors import ErrorCode, HubError
from hub.history import Retention, RetentionRules, TenantLimited
from hub.liveness import HeartbeatWatch
from hub.metrics import Metrics
from hub.presence import Presence
from hub.resume import Resumes, Subscribed
from hub.rooms import Member, RoomKey, Rooms
from hub.state import snapshot
from hub.stats import Tally
from hub.tracing import UNTRACED, FanOutTrace, PublishTrace, Tracer


@dataclass(frozen=True, slots=True)
class Published:
    """Where a publish went: each room's new id (None without history), and its time."""

    ids: dict[str, str | None]
    ts: int
    replayed: bool = False
    """Nothing was published now: this is the answer of the publish that claimed the
    same idempotency key first."""


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    """A request's `Idempotency-Key`, with the sha256 (hex) of the body it came with."""

    key: str
    digest: str


class Node:
    """Takes its broker and presence from outside (`hub.assembly` builds them from the
    settings), so a whole node can run in one process on the memory broker."""

    def __init__(
        self,
        settings: Settings,
        run: str,
        broker: Broker,
        presence: Presence,
        retention: RetentionRules,
        metrics: Metrics,
        tally: Tally,
        tracer: Tracer,
    ) -> None:
        self.settings = settings
        self.id = settings.node_id
        self.broker = broker
        self.presence = presence
        self.retention = retention
        self.metrics = metrics
        self.tally = tally
        self.rooms = Rooms()
        self.heartbeats = HeartbeatWatch(settings.heartbeat_timeout)
        self._run = run
        self._resumes = Resumes(self.rooms, self._occupy, self._read_with_state)
        self._subscribing: dict[RoomKey, asyncio.Future[None]] = {}
        self._conn_ids = itertools.count(1)
        self._arrived: list[tuple[RoomKey, bytes]] = []
        self.tracer = tracer
        self._traced: dict[RoomKey, list[tuple[bytes, bytes]]] = {}
        """This turn's events that came with a trace (while tracing): their trace context."""

    async def start(self) -> None:
        await self.broker.connect(self._deliver, self._lost)
        await self.presence.start()
        self.heartbeats.start()

    async def stop(self) -> None:
        await self.heartbeats.stop()
        await self.presence.stop()
        await self.broker.disconnect()
        await self.tracer.stop()

    def next_conn_id(self) -> str:
        return f"{self._run}.{next(self._conn_ids)}"

    def retention_of(self, key: RoomKey) -> Retention:
        return self.retention.for_room(key.room)

    def _deliver(self, key: RoomKey, payload: bytes) -> None:
        """Take an event from the broker; fan it out with the others of this loop turn."""
        if not payload or payload[0] != envelope.OPEN:
            carrier, payload = envelope.untraced(payload)
            if not payload:
                return  # not an event: nothing the hub published
            if self.tracer.on:
                self._traced.setdefault(key, []).append((carrier, payload))
        if not self._arrived:
            asyncio.get_running_loop().call_soon(self._fan_out)
        self._arrived.append((key, payload))

    def _lost(self, keys: list[RoomKey]) -> None:
        """The broker stopped carrying these rooms: close their members, which resume
        (with `since`, exactly) wherever they reconnect. They leave the rooms now, so a
        member joining meanwhile subscribes the room again."""
        for key in keys:
            for member in self.rooms.empty(key):
                member.close(BROKER_LOST)

    def _fan_out(self) -> None:
        """Hand this turn's events to the local members, room by room in arrival order.

        Events that arrive together (a burst read from Redis in one go, publishes handled
        in the same turn) then reach each socket in one write instead of one each.
        """
        arrived, self._arrived = self._arrived, []
        traced = self._traced
        if traced:
            self._traced = {}
        by_room: dict[RoomKey, list[bytes]] = {}
        for key, payload in arrived:
            by_room.setdefault(key, []).append(payload)
        observe = self.metrics.delivery_latency.observe
        ts_of = envelope.ts_of
        for key, payloads in by_room.items():
            spans = self._spans(key, traced[key]) if traced and key in traced else None
            delivered = self.rooms.fan_out(key, payloads)
            if spans is not None:
                for span in spans.values():
                    span.done(delivered // len(payloads))
            if delivered:
                self.tally.messages_out += delivered
                self.tally.tenants_out[key.tenant] += delivered
                written = time.time()
                if spans is None:
                    for payload in payloads:
                        observe(written - ts_of(payload) / 1000)
                    continue
                for payload in payloads:
                    mark = spans.get(id(payload))
                    observe(
                        written - ts_of(payload) / 1000, None if mark is None else mark.exemplar
                    )

    def _spans(self, key: RoomKey, traced: list[tuple[bytes, bytes]]) -> dict[int, FanOutTrace]:
        """A span for each event of `key` this turn that came with its publisher's trace,
        by the identity of its bytes."""
        return {
            id(payload): self.tracer.fan_out(key, carrier, payload) for carrier, payload in traced
        }

    async def join(self, key: RoomKey, member: Member) -> None:
        """Add `member` to a room; return once the room's events reach this node."""
        await self._occupy(key, member, self.rooms.add(key, member))

    async def _occupy(self, key: RoomKey, member: Member, new: bool) -> None:
        """The first local member subscribes the node through the broker; members arriving
        meanwhile wait for that same subscription. On failure the member is taken out
        again and the error propagates."""
        if new:
            pending = asyncio.get_running_loop().create_future()
            self._subscribing[key] = pending
            try:
                await self.broker.subscribe(key)
            except BaseException as error:
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
            except BaseException:
                await self.leave(key, member)
                raise

    async def leave(self, key: RoomKey, member: Member) -> None:
        if self.rooms.remove(key, member):
            await self.broker.unsubscribe(key)

    async def subscribe(
        self, key: RoomKey, member: Member, since: str | None, epoch: str | None
    ) -> Subscribed:
        """Join a room, replaying what `member` missed after `since` (see `hub.resume`)."""
        return await self._resumes.subscribe(key, member, since, epoch, self.retention_of(key))

    async def history(self, key: RoomKey, since: str | None, limit: int) -> HistoryPage:
        return await self.broker.history(key, since, limit, self.retention_of(key))

    async def _read_with_state(
        self, key: RoomKey, since: str | None, limit: int, retention: Retention
    ) -> HistoryPage:
        page = await self.broker.history(key, since, limit, retention, state=True)
        return replace(page, state=self._current(page.state))

    async def states(self, keys: Sequence[RoomKey]) -> list[list[bytes]]:
        """Each room's current state, in one read."""
        return [self._current(kept) for kept in await self.broker.states(keys)]

    def _current(self, kept: list[bytes]) -> list[bytes]:
        """State events within `HUB_STATE_TTL`, ordered by id (`hub.state`)."""
        if not kept:
            return kept
        state = self.settings.state
        return snapshot(kept, int(time.time() * 1000), state.ttl_ms)

    def receipt_soon(
        self,
        sub: str,
        role: str,
        key: RoomKey,
        event_id: str,
        status: str,
        data: dict[str, Any] | None,
    ) -> asyncio.Future[bool]:
        """Store a principal's receipt of an event and announce it as `delivery.receipt` in
        the tenant's `status` room; resolves to False, doing nothing, when the event is not
        (or no longer) in the room's history."""
        ts = int(time.time() * 1000)
        said: dict[str, Any] = {
            "sub": sub,
            "role": role,
            "room": key.room,
            "id": event_id,
            "status": status,
        }
        record: dict[str, Any] = {"sub": sub, "role": role, "status": status, "time": ts}
        if data is not None:
            said["data"] = record["data"] = data
        payload = envelope.encode(STATUS_ROOM, "delivery.receipt", said, ts)
        limit = self.settings.max_receipt_bytes
        if len(payload) > limit:
            raise HubError(ErrorCode.TOO_LARGE, f"receipt is {len(payload)} bytes, limit {limit}")
        status_key = RoomKey(key.tenant, STATUS_ROOM)
        announce = Outgoing.of(status_key, payload, self.retention_of(status_key))
        receipt = OutgoingReceipt(
            key,
            event_id,
            f"{role} {sub}",
            orjson.dumps(record),
            self.retention_of(key).ttl_ms,
            announce,
        )
        stored = self.broker.receipt_soon(receipt)
        counted = self.metrics.receipts.labels(status)

        def count(stored: asyncio.Future[bool]) -> None:
            if not stored.cancelled() and stored.exception() is None and stored.result():
                self.tally.messages_in += 1
                counted.inc()

        stored.add_done_callback(count)
        return stored

    def publish_soon(
        self,
        tenant: str,
        rooms: Sequence[str],
        event: str,
        data: Any,
        idempotency: IdempotencyKey | None = None,
        trace: PublishTrace = UNTRACED,
    ) -> asyncio.Future[Published]:
        """Encode the event once per room and hand it to the broker now, for every room or
        for none; the future resolves once it is published. With an `idempotency` key,
        the tenant's first publish with it publishes, and later ones are answered as it
        was (see `Claim`), for `HUB_IDEMPOTENCY_TTL`. `trace` hears how it ended."""
        ts = int(time.time() * 1000)
        state = event if self.settings.state.of(event) else None
        claim = None if idempotency is None else self._claim(idempotency, ts)
        try:
            messages = self._encoded(tenant, rooms, event, data, ts, state)
            sent = self.broker.publish_soon(messages, claim, trace.carrier)
        except HubError as error:
            trace.failed(error)
            raise
        published: asyncio.Future[Published] = asyncio.get_running_loop().create_future()

        def done(sent: asyncio.Future[Sent]) -> None:
            """Count what the broker did, then answer, unless the caller went away."""
            answer: Published | BaseException
            error = sent.exception()
            if error is not None:
                if isinstance(error, TenantLimited):
                    self.metrics.tenant_limited.labels(error.bound).inc()
                answer = error
            elif isinstance(ids := sent.result(), Replay):
                answer = self._replayed(rooms, ids)
            else:
                if state is not None:
                    self.metrics.state_publishes.inc(len(messages))
                self.tally.messages_in += len(messages)
                self.tally.tenants_in[tenant] += len(messages)
                answer = Published(dict(zip(rooms, ids, strict=True)), ts)
            if trace is not UNTRACED:
                _tell(trace, answer)
            if published.cancelled():
                return
            if isinstance(answer, Published):
                published.set_result(answer)
            else:
                published.set_exception(answer)

        sent.add_done_callback(done)
        return published

    def _claim(self, idempotency: IdempotencyKey, ts: int) -> Claim:
        """What a publish with this key claims, for `HUB_IDEMPOTENCY_TTL`."""
        ttl_ms = max(1, int(self.settings.idempotency_ttl * 1000))
        return Claim(idempotency.key, idempotency.digest, ts, ttl_ms)

    def _encoded(
        self,
        tenant: str,
        rooms: Sequence[str],
        event: str,
        data: Any,
        ts: int,
        state: str | None,
    ) -> list[Outgoing]:
        """The event encoded once per room, each within `HUB_MAX_EVENT_BYTES`."""
        limit = self.settings.max_event_bytes
        messages = []
        for room in rooms:
            payload = envelope.encode(room, event, data, ts)
            if len(payload) > limit:
                raise HubError(ErrorCode.TOO_LARGE, f"event is {len(payload)} bytes, limit {limit}")
            key = RoomKey(tenant, room)
            messages.append(Outgoing.of(key, payload, self.retention_of(key), state))
        return messages

    def _replayed(self, rooms: Sequence[str], replay: Replay) -> Published | IdempotencyConflict:
        """The answer the first publish of an idempotency key got, for this publish."""
        if len(replay.ids) != len(rooms):  # a stored answer of another shape: not ours
            return IdempotencyConflict()
        self.metrics.idempotent_replays.inc()
        return Published(dict(zip(rooms, replay.ids, strict=True)), replay.ts, replayed=True)


def _tell(trace: PublishTrace, answer: Published | BaseException) -> None:
    if isinstance(answer, Published):
        trace.published(answer.ids, answer.replayed)
    else:
        trace.failed(answer)
