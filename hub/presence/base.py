"""Presence: which nodes are alive (and their figures), who is in which room on every
node, each device's last heartbeat, and the device lifecycle events (`device.online`,
`device.offline`, `device.heartbeat`) that follow from them.

A connection tells presence what happens to it (connect, join, leave, heartbeat,
disconnect); only connect waits, until the socket is visible to every node. The node's
own sockets are the truth; what an implementation keeps elsewhere (Redis) is a copy that
it rebuilds whenever it may have drifted. A device is online while it has at least one
socket anywhere in the cluster, so a device that reconnects to another node before its old
socket is reaped never goes offline.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from hub.auth import STATUS_ROOM, Role
from hub.broker import Outgoing
from hub.config import Settings
from hub.history import RetentionRules
from hub.protocol import ErrorCode, HubError, event_frame
from hub.rooms import room_key
from hub.stats import Tally

Member = dict[str, Any]
"""One entry of a room's presence: `sub`, `role`, `node`, `conn`, `since`, `heartbeat`."""


class Gone(StrEnum):
    """Why a device went offline: the `reason` of `device.offline`."""

    CLOSED = "closed"
    HEARTBEAT_TIMEOUT = "heartbeat_timeout"
    PING_TIMEOUT = "ping_timeout"
    NODE_LOST = "node_lost"
    NODE_RESTART = "node_restart"
    SLOW_CONSUMER = "slow_consumer"
    RATE_LIMITED = "rate_limited"
    TOKEN_EXPIRED = "token_expired"
    POLICY = "policy"
    ERROR = "error"


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(slots=True, eq=False)
class Present:
    """One socket as presence sees it."""

    conn: str
    sub: str
    role: Role
    tenant: str | None
    loc: str | None = None
    rooms: dict[str, int] = field(default_factory=dict)
    """Room key to the time (ms) the socket joined it."""

    @property
    def device(self) -> tuple[str, str] | None:
        """(tenant, sub) for a device: the identity that is online or offline."""
        if self.role is not Role.DEVICE or self.tenant is None:
            return None
        return self.tenant, self.sub

    def member(self, node: str, key: str) -> Member:
        return {
            "sub": self.sub,
            "role": self.role.value,
            "node": node,
            "conn": self.conn,
            "since": self.rooms[key],
        }


class Presence(ABC):
    """The verbs a connection calls, the lifecycle events they cause, and the room listing."""

    def __init__(self, settings: Settings, retention: RetentionRules, tally: Tally) -> None:
        self.node = settings.node_id
        self._status = retention.for_room(STATUS_ROOM)
        self._max_event_bytes = settings.max_event_bytes
        self._tally = tally

    async def connect(self, present: Present, keys: Iterable[str]) -> None:
        """A socket is open and in the rooms `keys`; announce its device if it is new.

        The one verb that waits: until every node can see the socket.
        """
        since = now_ms()
        for key in keys:
            present.rooms[key] = since
        await self._connected(present)

    def join(self, present: Present, key: str) -> None:
        if key not in present.rooms:
            present.rooms[key] = now_ms()
            self._joined(present, key)

    def leave(self, present: Present, key: str) -> None:
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
        event = self._event(
            device[0], "device.heartbeat", {"device": present.sub, **fields}, ts, limit=True
        )
        self._beat(present, {**fields, "time": ts}, event)
        self._tally.messages_in += 1

    def _event(
        self, tenant: str, name: str, data: dict[str, Any], ts: int, *, limit: bool = False
    ) -> Outgoing:
        """Encode a lifecycle event for the tenant's `status` room, once."""
        payload = event_frame(STATUS_ROOM, name, data, ts, None)
        if limit and len(payload) > self._max_event_bytes:
            raise HubError(
                ErrorCode.TOO_LARGE,
                f"heartbeat event is {len(payload)} bytes, limit {self._max_event_bytes}",
            )
        return Outgoing.of(room_key(tenant, STATUS_ROOM), payload, self._status)

    def online_event(self, present: Present) -> Outgoing:
        device = present.device
        assert device is not None
        data: dict[str, Any] = {"device": present.sub, "node": self.node}
        if present.loc is not None:
            data["loc"] = present.loc
        return self._event(device[0], "device.online", data, now_ms())

    def offline_event(self, present: Present, reason: Gone) -> Outgoing:
        device = present.device
        assert device is not None
        data = {"device": present.sub, "node": self.node, "reason": reason.value}
        return self._event(device[0], "device.offline", data, now_ms())

    @abstractmethod
    async def start(self) -> None:
        """Begin keeping presence (register this node where the cluster can see it)."""

    @abstractmethod
    async def stop(self) -> None:
        """Write out what is pending and leave, after this node's sockets have closed."""

    @abstractmethod
    async def report(self, figures: dict[str, Any]) -> None:
        """Make this node's latest figures (`stats.Figures.as_json`) visible to every node."""

    @abstractmethod
    async def nodes(self) -> list[dict[str, Any]]:
        """The latest figures of every live node, this one included."""

    @abstractmethod
    async def members(self, key: str) -> list[Member]:
        """Everyone in room `key` on every node, devices with their last heartbeat."""

    @abstractmethod
    async def _connected(self, present: Present) -> None: ...

    @abstractmethod
    def _joined(self, present: Present, key: str) -> None: ...

    @abstractmethod
    def _left(self, present: Present, key: str) -> None: ...

    @abstractmethod
    def _disconnected(self, present: Present, reason: Gone) -> None: ...

    @abstractmethod
    def _beat(self, present: Present, record: dict[str, Any], event: Outgoing) -> None: ...
