"""Presence of a single node: everything in this process, events published at once."""

from __future__ import annotations

from typing import Any

from hub import envelope
from hub.broker import MemoryBroker, Outgoing
from hub.config import Settings
from hub.disconnect import Gone
from hub.history import RetentionRules
from hub.presence.base import Member, Presence, Present, now_ms
from hub.rooms import RoomKey
from hub.stats import Tally


class MemoryPresence(Presence):
    """Keeps presence, and decides online and offline, in this process."""

    def __init__(
        self, broker: MemoryBroker, settings: Settings, retention: RetentionRules, tally: Tally
    ) -> None:
        super().__init__(settings, retention, tally)
        self._broker = broker
        self._rooms: dict[RoomKey, dict[str, Present]] = {}
        self._sockets: dict[tuple[str, str], int] = {}
        self._beats: dict[tuple[str, str], dict[str, Any]] = {}

    async def start(self) -> None:
        """Nothing to register: this node is the whole cluster."""

    async def stop(self) -> None:
        """Nothing to hand over: presence ends with the process."""

    async def members(self, key: RoomKey) -> list[Member]:
        listed = []
        for present in self._rooms.get(key, {}).values():
            member = present.member(self.node, key)
            device = present.device
            member["heartbeat"] = self._beats.get(device) if device is not None else None
            listed.append(member)
        return listed

    async def _connected(self, present: Present) -> None:
        for key in present.rooms:
            self._joined(present, key)
        device = present.device
        if device is not None:
            sockets = self._sockets.get(device, 0) + 1
            self._sockets[device] = sockets
            if sockets == 1:
                self._publish(self.online_event(present))

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
        self._beats.pop(device, None)
        payload = envelope.finish(self.offline_head(present), reason.value, now_ms())
        self._publish(self._status_event(device[0], payload))

    def _beat(self, present: Present, record: dict[str, Any], event: Outgoing) -> None:
        device = present.device
        assert device is not None
        self._beats[device] = record
        self._publish(event)

    def _publish(self, event: Outgoing) -> None:
        self._broker.publish_now([event])
