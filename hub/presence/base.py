"""Presence: who is in which room on every node, each device's last heartbeat, and the
device lifecycle events (`device.online`, `device.offline`, `device.heartbeat`) that
follow from them.

A session tells presence what happens to it (connect, join, leave, heartbeat,
disconnect); only connect waits, until the socket is visible to every node. The node's
own sockets are the truth; what an implementation keeps elsewhere (Redis) is a copy that
it rebuilds whenever it may have drifted. A device is online while it has at least one
socket anywhere in the cluster, so a device that reconnects to another node before its old
socket is reaped never goes offline.

Presence also keeps the fleet (`hub.fleet`): every device seen within `HUB_FLEET_TTL`,
online or not, written in the same steps that decide `device.online` and `device.offline`,
so that a listing never disagrees with the events.
"""

from __future__ import annotations

import heapq
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from hub import envelope
from hub.auth import STATUS_ROOM, Role
from hub.broker import Outgoing
from hub.config import Settings
from hub.disconnect import Gone
from hub.errors import ErrorCode, HubError
from hub.fleet import FleetPage, FleetQuery
from hub.history import RetentionRules
from hub.protocol import now_ms
from hub.rooms import RoomKey
from hub.stats import Tally

MemberRecord = dict[str, Any]
"""One entry of a room's presence: `sub`, `role`, `node`, `conn`, `since`, `heartbeat`."""
Place = tuple[str, str]
"""Where a member is listed in its room: by `sub`, then `conn`."""
_PLACE = itemgetter("sub", "conn")


def first_members(
    members: Iterable[MemberRecord], after: Place | None, count: int
) -> list[MemberRecord]:
    """The first `count` of `members` in listing order, past `after` if given: one pass
    that keeps `count`, not a sort of them all."""
    if after is not None:
        members = (member for member in members if _PLACE(member) > after)
    return heapq.nsmallest(count, members, key=_PLACE)


@dataclass(slots=True, eq=False)
class Present:
    """One socket as presence sees it."""

    conn: str
    sub: str
    role: Role
    tenant: str | None
    loc: str | None = None
    groups: tuple[str, ...] = ()
    rooms: dict[RoomKey, int] = field(default_factory=dict)
    """Room to the time (ms) the socket joined it."""

    @property
    def device(self) -> tuple[str, str] | None:
        """(tenant, sub) for a device: the identity that is online or offline."""
        if self.role is not Role.DEVICE or self.tenant is None:
            return None
        return self.tenant, self.sub

    def member(self, node: str, key: RoomKey) -> MemberRecord:
        return {
            "sub": self.sub,
            "role": self.role.value,
            "node": node,
            "conn": self.conn,
            "since": self.rooms[key],
        }


class Presence(ABC):
    """The verbs a session calls, the lifecycle events they cause, and the room listing."""

    def __init__(self, settings: Settings, retention: RetentionRules, tally: Tally) -> None:
        self.node = settings.node_id
        self._status = retention.for_room(STATUS_ROOM)
        self._max_heartbeat_bytes = settings.max_heartbeat_bytes
        self._fleet_ttl_ms = int(settings.fleet_ttl * 1000)
        self._tally = tally

    async def connect(self, present: Present, keys: Iterable[RoomKey]) -> None:
        """A socket is open and in the rooms `keys`; announce its device if it is new.

        The one verb that waits: until every node can see the socket.
        """
        since = now_ms()
        for key in keys:
            present.rooms[key] = since
        await self._connected(present)

    def join(self, present: Present, key: RoomKey) -> None:
        if key not in present.rooms:
            present.rooms[key] = now_ms()
            self._joined(present, key)

    def leave(self, present: Present, key: RoomKey) -> None:
        if present.rooms.pop(key, None) is not None:
            self._left(present, key)

    def disconnect(self, present: Present, reason: Gone) -> None:
        """The socket is gone; its device goes offline if this was its last socket."""
        self._disconnected(present, reason)

    def heartbeat(self, present: Present, data: dict[str, Any]) -> None:
        """Record a device's heartbeat `data` (already checked) and publish it to `status`."""
        device = present.device
        assert device is not None
        ts = now_ms()
        fields = {key: value for key, value in data.items() if key != "device"}
        payload = envelope.encode(
            STATUS_ROOM, "device.heartbeat", {"device": device[1], **fields}, ts
        )
        if len(payload) > self._max_heartbeat_bytes:
            raise HubError(
                ErrorCode.TOO_LARGE,
                f"heartbeat event is {len(payload)} bytes, limit {self._max_heartbeat_bytes}",
            )
        self._beat(present, {**fields, "time": ts}, self._status_event(device[0], payload))
        self._tally.messages_in += 1
        self._tally.tenants_in[device[0]] += 1

    def _status_event(self, tenant: str, payload: bytes) -> Outgoing:
        """A lifecycle event, encoded once, for the tenant's `status` room."""
        return Outgoing.of(RoomKey(tenant, STATUS_ROOM), payload, self._status)

    def online_event(self, present: Present) -> Outgoing:
        device = present.device
        assert device is not None
        data: dict[str, Any] = {"device": present.sub, "node": self.node}
        if present.loc is not None:
            data["loc"] = present.loc
        payload = envelope.encode(STATUS_ROOM, "device.online", data, now_ms())
        return self._status_event(device[0], payload)

    def offline_head(self, present: Present) -> bytes:
        """The device's `device.offline` event up to its reason: whoever reports it (perhaps
        another node, after this one died) only finishes it (`envelope.finish`)."""
        data = {"device": present.sub, "node": self.node, "reason": ""}
        return envelope.head(STATUS_ROOM, "device.offline", data)

    @property
    def ready(self) -> bool:
        """Whether every node can see this node's sockets: what `/readyz` waits for."""
        return True

    @abstractmethod
    async def start(self) -> None:
        """Begin keeping presence (register this node where the cluster can see it)."""

    @abstractmethod
    async def stop(self) -> None:
        """Write out what is pending and leave, after this node's sockets have closed."""

    @abstractmethod
    async def members(
        self, key: RoomKey, after: Place | None = None, count: int | None = None
    ) -> list[MemberRecord]:
        """Everyone in room `key` on every node, devices with their last heartbeat, in
        listing order: the first `count` (all when None) past `after` (a member's place).
        Only those get their heartbeat, so a page of a large room costs about its page."""

    @abstractmethod
    async def devices(self, tenant: str, query: FleetQuery) -> FleetPage:
        """A page of the tenant's fleet (`hub.fleet`): every device online, or offline and
        last seen within `HUB_FLEET_TTL`; online exactly between its online and offline
        events."""

    @abstractmethod
    async def _connected(self, present: Present) -> None: ...

    @abstractmethod
    def _joined(self, present: Present, key: RoomKey) -> None: ...

    @abstractmethod
    def _left(self, present: Present, key: RoomKey) -> None: ...

    @abstractmethod
    def _disconnected(self, present: Present, reason: Gone) -> None: ...

    @abstractmethod
    def _beat(self, present: Present, record: dict[str, Any], event: Outgoing) -> None: ...
