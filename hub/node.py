"""A node: local rooms joined to the broker. The only place the two meet."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import replace

from hub import envelope
from hub.broker import Broker, HistoryPage
from hub.disconnect import BROKER_LOST
from hub.history import Retention, RetentionRules
from hub.metrics import Metrics
from hub.resume import Resumes, Subscribed
from hub.rooms import Member, RoomKey, Rooms
from hub.state import StateEvents, snapshot
from hub.stats import Tally
from hub.tracing import FanOutTrace, Tracer


class Node:
    """Takes its broker from outside (`hub.assembly` chooses it), so a whole node can run
    in one process on the memory broker."""

    def __init__(
        self,
        broker: Broker,
        retention: RetentionRules,
        state: StateEvents,
        metrics: Metrics,
        tally: Tally,
        tracer: Tracer,
    ) -> None:
        self.broker = broker
        self.retention = retention
        self.rooms = Rooms()
        self._state = state
        self._metrics = metrics
        self._tally = tally
        self._tracer = tracer
        self._resumes = Resumes(self.rooms, self._occupy, self._read_with_state)
        self._subscribing: dict[RoomKey, asyncio.Future[None]] = {}
        self._arrived: list[tuple[RoomKey, bytes]] = []
        self._traced: dict[RoomKey, list[tuple[bytes, bytes]]] = {}
        """This turn's events that came with a trace (while tracing): their trace context."""

    async def start(self) -> None:
        await self.broker.connect(self._deliver, self._lost)

    async def stop(self) -> None:
        await self.broker.disconnect()

    def retention_of(self, key: RoomKey) -> Retention:
        return self.retention.for_room(key.room)

    def _deliver(self, key: RoomKey, payload: bytes) -> None:
        """Take an event from the broker; fan it out with the others of this loop turn."""
        if not payload or payload[0] != envelope.OPEN:
            carrier, payload = envelope.untraced(payload)
            if not payload:
                return  # not an event: nothing the hub published
            if self._tracer.on:
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
        observe = self._metrics.delivery_latency.observe
        ts_of = envelope.ts_of
        for key, payloads in by_room.items():
            spans = self._spans(key, traced[key]) if traced and key in traced else None
            delivered = self.rooms.fan_out(key, payloads)
            if spans is not None:
                for span in spans.values():
                    span.done(delivered // len(payloads))
            if delivered:
                self._tally.messages_out += delivered
                self._tally.tenants_out[key.tenant] += delivered
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
            id(payload): self._tracer.fan_out(key, carrier, payload) for carrier, payload in traced
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
        """The room's events after `since`, those past their `expires` left out."""
        page = await self.broker.history(key, since, limit, self.retention_of(key))
        return replace(page, events=envelope.live(page.events, int(time.time() * 1000)))

    async def _read_with_state(
        self, key: RoomKey, since: str | None, limit: int, retention: Retention
    ) -> HistoryPage:
        page = await self.broker.history(key, since, limit, retention, state=True)
        return replace(page, state=self._current(page.state))

    async def states(self, keys: Sequence[RoomKey]) -> list[list[bytes]]:
        """Each room's current state, in one read."""
        return [self._current(kept) for kept in await self.broker.states(keys)]

    def _current(self, kept: list[bytes]) -> list[bytes]:
        """State events within `HUB_STATE_TTL` and not expired, ordered by id (`hub.state`)."""
        if not kept:
            return kept
        now = int(time.time() * 1000)
        return snapshot(envelope.live(kept, now), now, self._state.ttl_ms)
