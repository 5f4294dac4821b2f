"""Presence of a single node: everything in this process, events published at once."""

from __future__ import annotations

import bisect
from collections import OrderedDict
from typing import Any

from hub import envelope
from hub.broker import MemoryBroker, Outgoing
from hub.config import Settings
from hub.disconnect import Gone
from hub.fleet import FORGET_BATCH, SCAN_BUDGET, Device, FleetPage, FleetQuery
from hub.history import RetentionRules
from hub.presence.base import Member, Presence, Present, now_ms
from hub.rooms import RoomKey
from hub.stats import Tally


class MemoryFleet:
    """Every device of every tenant seen within the TTL: each tenant's records by sub with
    its subs sorted for paging, and every device in the order it was last seen, so that
    those past the TTL are found at the front whichever tenant they belong to."""

    def __init__(self, ttl_ms: int) -> None:
        self._ttl_ms = ttl_ms
        self._records: dict[str, dict[str, Device]] = {}
        self._subs: dict[str, list[str]] = {}
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()

    def online(self, present: Present, node: str, since: int) -> None:
        tenant, sub = _device_of(present)
        records = self._records.setdefault(tenant, {})
        known = records.get(sub)
        if known is None:
            bisect.insort(self._subs.setdefault(tenant, []), sub)
        records[sub] = {
            "sub": sub,
            "online": True,
            "loc": present.loc,
            "groups": list(present.groups),
            "node": node,
            "since": since,
            "last_seen": since,
            "heartbeat": None if known is None else known["heartbeat"],
            "offline_reason": None,
        }
        self.seen(present, since)

    def offline(self, present: Present, reason: Gone, since: int) -> None:
        tenant, sub = _device_of(present)
        record = self._records[tenant][sub]
        record.update(online=False, node=None, since=since, offline_reason=reason.value)
        self.seen(present, since)

    def beat(self, present: Present, heartbeat: dict[str, Any]) -> None:
        tenant, sub = _device_of(present)
        self._records[tenant][sub]["heartbeat"] = heartbeat
        self.seen(present, heartbeat["time"])

    def seen(self, present: Present, now: int) -> None:
        """The device showed a sign of life (or went offline) at `now`."""
        device = _device_of(present)
        self._touch(device, now)
        self._forget(now)

    def heartbeat(self, tenant: str, sub: str) -> dict[str, Any] | None:
        record = self._records.get(tenant, {}).get(sub)
        return None if record is None else record["heartbeat"]

    def page(self, tenant: str, query: FleetQuery, now: int) -> FleetPage:
        records, subs = self._records.get(tenant, {}), self._subs.get(tenant, [])
        start = 0 if query.after is None else bisect.bisect_right(subs, query.after)
        cutoff = now - self._ttl_ms
        found: list[Device] = []
        at, end = start, min(len(subs), start + SCAN_BUDGET)
        while at < end and len(found) < query.limit:
            record = records[subs[at]]
            at += 1
            if (record["online"] or record["last_seen"] >= cutoff) and query.matches(record):
                found.append(dict(record))
        return FleetPage(found, subs[at - 1] if at < len(subs) else None)

    def _touch(self, device: tuple[str, str], now: int) -> None:
        self._records[device[0]][device[1]]["last_seen"] = now
        self._seen[device] = None
        self._seen.move_to_end(device)

    def _forget(self, now: int) -> None:
        """Forget a few offline devices last seen longer than the TTL ago; an online one
        found among them is seen now (it is still connected)."""
        cutoff = now - self._ttl_ms
        for _ in range(FORGET_BATCH):
            device = next(iter(self._seen), None)
            if device is None:
                return
            tenant, sub = device
            record = self._records[tenant][sub]
            if record["last_seen"] >= cutoff:
                return
            if record["online"]:
                self._touch(device, now)
                continue
            del self._seen[device]
            del self._records[tenant][sub]
            subs = self._subs[tenant]
            del subs[bisect.bisect_left(subs, sub)]
            if not subs:
                del self._records[tenant], self._subs[tenant]


def _device_of(present: Present) -> tuple[str, str]:
    device = present.device
    assert device is not None
    return device


class MemoryPresence(Presence):
    """Keeps presence and the fleet, and decides online and offline, in this process."""

    def __init__(
        self, broker: MemoryBroker, settings: Settings, retention: RetentionRules, tally: Tally
    ) -> None:
        super().__init__(settings, retention, tally)
        self._broker = broker
        self._rooms: dict[RoomKey, dict[str, Present]] = {}
        self._sockets: dict[tuple[str, str], int] = {}
        self._fleet = MemoryFleet(self._fleet_ttl_ms)

    async def start(self) -> None:
        """Nothing to register: this node is the whole cluster."""

    async def stop(self) -> None:
        """Nothing to hand over: presence ends with the process."""

    async def members(self, key: RoomKey) -> list[Member]:
        listed = []
        for present in self._rooms.get(key, {}).values():
            member = present.member(self.node, key)
            device = present.device
            member["heartbeat"] = None if device is None else self._fleet.heartbeat(*device)
            listed.append(member)
        return listed

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
        self._rooms.setdefault(key, {})[present.conn] = present

    def _left(self, present: Present, key: RoomKey) -> None:
        members = self._rooms.get(key)
        if members is not None:
            members.pop(present.conn, None)
            if not members:
                del self._rooms[key]

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
