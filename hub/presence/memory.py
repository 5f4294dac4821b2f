"""Presence of a single node: everything in this process, events published at once."""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any

from hub import envelope
from hub.broker import MemoryBroker, Outgoing
from hub.config import Settings
from hub.disconnect import Gone
from hub.fleet import SCAN_BUDGET, Device, FleetPage, FleetQuery
from hub.history import RetentionRules
from hub.presence.base import MemberRecord, Place, Presence, Present
from hub.protocol import now_ms
from hub.rooms import RoomKey
from hub.stats import Tally

SWEEP_MS = 60_000
"""Longest time between two sweeps of the fleet for devices past its TTL."""


@dataclass(slots=True)
class _Record:
    """One device in the fleet: what `Device` lists, without its sub."""

    online: bool
    loc: str | None
    groups: tuple[str, ...]
    node: str | None
    since: int
    last_seen: int
    heartbeat: dict[str, Any] | None = None
    offline_reason: str | None = None

    def listed(self, sub: str) -> Device:
        return {
            "sub": sub,
            "online": self.online,
            "loc": self.loc,
            "groups": list(self.groups),
            "node": self.node,
            "since": self.since,
            "last_seen": self.last_seen,
            "heartbeat": self.heartbeat,
            "offline_reason": self.offline_reason,
        }


class MemoryFleet:
    """Every device of every tenant seen within the TTL: each tenant's records by sub, and
    its subs sorted for paging. Devices past the TTL are skipped by reads at once and
    forgotten by a sweep at most every `SWEEP_MS` (sooner with a shorter TTL)."""

    def __init__(self, ttl_ms: int) -> None:
        self._ttl_ms = ttl_ms
        self._records: dict[str, dict[str, _Record]] = {}
        self._subs: dict[str, list[str]] = {}
        self._sweep_at = 0

    def online(self, present: Present, node: str, since: int) -> None:
        tenant, sub = _device_of(present)
        records = self._records.setdefault(tenant, {})
        known = records.get(sub)
        if known is None:
            bisect.insort(self._subs.setdefault(tenant, []), sub)
        heartbeat = None if known is None else known.heartbeat
        records[sub] = _Record(True, present.loc, present.groups, node, since, since, heartbeat)
        self._swept(since)

    def offline(self, present: Present, reason: Gone, since: int) -> None:
        record = self._record(present)
        record.online, record.node, record.since = False, None, since
        record.offline_reason, record.last_seen = reason.value, since
        self._swept(since)

    def beat(self, present: Present, heartbeat: dict[str, Any]) -> None:
        record = self._record(present)
        record.heartbeat, record.last_seen = heartbeat, heartbeat["time"]

    def seen(self, present: Present, now: int) -> None:
        """The device showed a sign of life at `now`."""
        self._record(present).last_seen = now
        self._swept(now)

    def heartbeat(self, tenant: str, sub: str) -> dict[str, Any] | None:
        record = self._records.get(tenant, {}).get(sub)
        return None if record is None else record.heartbeat

    def page(self, tenant: str, query: FleetQuery, now: int) -> FleetPage:
        records, subs = self._records.get(tenant, {}), self._subs.get(tenant, [])
        start = 0 if query.after is None else bisect.bisect_right(subs, query.after)
        cutoff = now - self._ttl_ms
        found: list[Device] = []
        at, end = start, min(len(subs), start + SCAN_BUDGET)
        while at < end and len(found) < query.limit:
            sub = subs[at]
            record = records[sub]
            at += 1
            if record.online or record.last_seen >= cutoff:
                listed = record.listed(sub)
                if query.matches(listed):
                    found.append(listed)
        return FleetPage(found, subs[at - 1] if at < len(subs) else None)

    def _record(self, present: Present) -> _Record:
        tenant, sub = _device_of(present)
        return self._records[tenant][sub]

    def _swept(self, now: int) -> None:
        """Forget the offline devices last seen longer than the TTL ago; an online one is
        seen now (it is still connected). One pass over the fleet, now and then."""
        if now < self._sweep_at:
            return
        self._sweep_at = now + min(SWEEP_MS, self._ttl_ms)
        cutoff = now - self._ttl_ms
        for tenant, records in list(self._records.items()):
            for sub, record in list(records.items()):
                if record.last_seen >= cutoff:
                    continue
                if record.online:
                    record.last_seen = now
                    continue
                del records[sub]
                subs = self._subs[tenant]
                del subs[bisect.bisect_left(subs, sub)]
            if not records:
                del self._records[tenant], self._subs[tenant]


def _device_of(present: Present) -> tuple[str, str]:
    device = present.device
    assert device is not None
    return device


def _place(present: Present) -> Place:
    return present.sub, present.conn


class MemoryPresence(Presence):
    """Keeps presence and the fleet, and decides online and offline, in this process."""

    def __init__(
        self, broker: MemoryBroker, settings: Settings, retention: RetentionRules, tally: Tally
    ) -> None:
        super().__init__(settings, retention, tally)
        self._broker = broker
        broker.counting(self._reach)
        self._rooms: dict[RoomKey, dict[str, Present]] = {}
        self._places: dict[RoomKey, list[Present]] = {}
        """The members of each room read since it was made, in listing order (`_place`),
        for pages read by bisection. Kept only for rooms someone reads: most rooms (each
        device's own) never are, and an order for each would cost every socket."""
        self._sockets: dict[tuple[str, str], int] = {}
        self._fleet = MemoryFleet(self._fleet_ttl_ms)

    def _reach(self, key: RoomKey) -> int:
        return len(self._rooms.get(key, ()))

    async def start(self) -> None:
        """Nothing to register: this node is the whole cluster."""

    async def stop(self) -> None:
        """Nothing to hand over: presence ends with the process."""

    async def members(
        self, key: RoomKey, after: Place | None = None, count: int | None = None
    ) -> list[MemberRecord]:
        places = self._places.get(key)
        if places is None:
            places = sorted(self._rooms.get(key, {}).values(), key=_place)
            if places:
                self._places[key] = places
        start = 0 if after is None else bisect.bisect_right(places, after, key=_place)
        stop = len(places) if count is None else start + count
        return [self._member(member, key) for member in places[start:stop]]

    def _member(self, present: Present, key: RoomKey) -> MemberRecord:
        member = present.member(self.node, key)
        device = present.device
        member["heartbeat"] = None if device is None else self._fleet.heartbeat(*device)
        return member

    async def devices(self, tenant: str, query: FleetQuery) -> FleetPage:
        return self._fleet.page(tenant, query, now_ms())

    async def _connected(self, present: Present) -> None:
        for key in present.rooms:
            self._joined(present, key)
        device = present.device
        if device is None:
            return
        sockets = self._sockets.get(device, 0) + 1
        self._sockets[device] = sockets
        if sockets > 1:
            self._fleet.seen(present, now_ms())
            return
        event = self.online_event(present)
        self._fleet.online(present, self.node, envelope.ts_of(event.prefix))
        self._publish(event)

    def _joined(self, present: Present, key: RoomKey) -> None:
        members = self._rooms.setdefault(key, {})
        places = self._places.get(key)
        if places is not None and present.conn not in members:
            bisect.insort(places, present, key=_place)
        members[present.conn] = present

    def _left(self, present: Present, key: RoomKey) -> None:
        members = self._rooms.get(key)
        if members is not None and members.pop(present.conn, None) is not None:
            places = self._places.get(key)
            if places is not None:
                del places[bisect.bisect_left(places, _place(present), key=_place)]
            if not members:
                del self._rooms[key]
                self._places.pop(key, None)

    def _disconnected(self, present: Present, reason: Gone) -> None:
        for key in present.rooms:
            self._left(present, key)
        device = present.device
        if device is None:
            return
        sockets = self._sockets.pop(device) - 1
        if sockets:
            self._sockets[device] = sockets
            return
        now = now_ms()
        self._fleet.offline(present, reason, now)
        payload = envelope.finish(self.offline_head(present), reason.value, now)
        self._publish(self._status_event(device[0], payload))

    def _beat(self, present: Present, record: dict[str, Any], event: Outgoing) -> None:
        self._fleet.beat(present, record)
        self._publish(event)

    def _publish(self, event: Outgoing) -> None:
        self._broker.publish_now([event])
