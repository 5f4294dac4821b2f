"""Room keys, and this node's rooms: which local sockets are in which room, and local
fan-out. Knows nothing of brokers or other nodes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

from hub.protocol import websocket_text_frame


class RoomKey(NamedTuple):
    """A tenant's room: rooms of different tenants never meet."""

    tenant: str
    room: str

    @property
    def name(self) -> str:
        """The cluster-wide name, for Redis keys; tenants cannot contain ':', rooms can."""
        return f"{self.tenant}:{self.room}"


class Member(Protocol):
    """A socket in a room, as the fan-out sees it."""

    def send(self, frame: bytes) -> None:
        """Take already-framed messages without blocking and without leaving any room."""


class StandIn(Protocol):
    """Takes a member's place in a room for a while, and its events one by one."""

    def take(self, frames: Sequence[bytes]) -> None:
        """Take a room's events, framed, in order."""


class _Room:
    """One room's local members and stand-ins."""

    __slots__ = ("members", "stand_ins")

    def __init__(self) -> None:
        self.members: set[Member] = set()
        self.stand_ins: dict[Member, StandIn] = {}
        """A member whose place is taken, to what stands in for it."""


class Rooms:
    """Room key to local members. A room exists while anyone is in it."""

    def __init__(self) -> None:
        self._rooms: dict[RoomKey, _Room] = {}

    def _enter(self, key: RoomKey) -> tuple[_Room, bool]:
        room = self._rooms.get(key)
        if room is None:
            room = self._rooms[key] = _Room()
            return room, True
        return room, False

    def add(self, key: RoomKey, member: Member) -> bool:
        """Put `member` in the room; True when the room is new on this node."""
        room, new = self._enter(key)
        room.members.add(member)
        return new

    def stand_in(self, key: RoomKey, member: Member, stand_in: StandIn) -> bool:
        """Let `stand_in` take `member`'s place (or hold one for it), in one step: no event
        can fall between them. True when the room is new on this node."""
        room, new = self._enter(key)
        room.members.discard(member)
        room.stand_ins[member] = stand_in
        return new

    def stand_down(self, key: RoomKey, member: Member, stand_in: StandIn) -> None:
        """Give `member` its place back from `stand_in`, if it still holds it."""
        room = self._rooms.get(key)
        if room is not None and room.stand_ins.get(member) is stand_in:
            del room.stand_ins[member]
            room.members.add(member)

    def remove(self, key: RoomKey, member: Member) -> bool:
        """Take `member`, or what stands in for it, out; True when that emptied the room,
        which is then forgotten."""
        room = self._rooms.get(key)
        if room is None:
            return False
        if member in room.members:
            room.members.discard(member)
        elif room.stand_ins.pop(member, None) is None:
            return False
        if room.members or room.stand_ins:
            return False
        del self._rooms[key]
        return True

    def has(self, key: RoomKey, member: Member) -> bool:
        room = self._rooms.get(key)
        return room is not None and (member in room.members or member in room.stand_ins)

    def fan_out(self, key: RoomKey, payloads: Sequence[bytes]) -> int:
        """Frame each event once and hand the same bytes to every local member: all of
        them in one buffer, so a burst costs each socket one write, not one per event.
        Returns the frames handed out."""
        room = self._rooms.get(key)
        if room is None:
            return 0
        frames = [websocket_text_frame(payload) for payload in payloads]
        joined = frames[0] if len(frames) == 1 else b"".join(frames)
        members = room.members
        for member in members:
            member.send(joined)
        stand_ins = room.stand_ins
        for stand_in in stand_ins.values():
            stand_in.take(frames)
        return (len(members) + len(stand_ins)) * len(frames)

    def __len__(self) -> int:
        return len(self._rooms)
