"""Room keys, and this node's rooms: which local sockets are in which room, and local
fan-out. Knows nothing of brokers or other nodes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import NamedTuple, Protocol

from hub.disconnect import Disconnect
from hub.protocol import websocket_text_frame


def tag(tenant: str) -> str:
    """The hash tag of every Redis key of a tenant: a cluster keeps them in one slot."""
    return f"{{{tenant}}}"


class RoomKey(NamedTuple):
    """A tenant's room: rooms of different tenants never meet."""

    tenant: str
    room: str

    @property
    def name(self) -> str:
        """The cluster-wide name, for Redis keys: the tenant is its hash tag, so a Redis
        Cluster keeps all of a tenant's keys in one slot (a tenant has no braces)."""
        return f"{tag(self.tenant)}:{self.room}"


class Member(Protocol):
    """A socket in a room, as the fan-out sees it."""

    def send(self, frame: bytes) -> None:
        """Take already-framed messages without blocking and without leaving any room."""

    def close(self, cause: Disconnect) -> None:
        """Close the socket for `cause`, without blocking."""


class StandIn(Protocol):
    """Takes a member's place in a room for a while, and its events one by one."""

    def take(self, frames: Sequence[bytes]) -> None:
        """Take a room's events, framed, in order."""


class Rooms:
    """Room key to local members. A room exists while anyone is in it.

    Stand-ins are kept apart from the members: they are rare and short-lived, and a room's
    members stay one plain set, as small as a room can be for the many rooms of one member.
    """

    def __init__(self) -> None:
        self._members: dict[RoomKey, set[Member]] = {}
        self._stand_ins: dict[RoomKey, dict[Member, StandIn]] = {}
        """For a room, a member whose place is taken, to what stands in for it."""

    def add(self, key: RoomKey, member: Member) -> bool:
        """Put `member` in the room; True when the room is new on this node."""
        members = self._members.get(key)
        if members is not None:
            members.add(member)
            return False
        self._members[key] = {member}
        return key not in self._stand_ins

    def stand_in(self, key: RoomKey, member: Member, stand_in: StandIn) -> bool:
        """Let `stand_in` take `member`'s place (or hold one for it), in one step: no event
        can fall between them. True when the room is new on this node."""
        members = self._members.get(key)
        new = members is None and key not in self._stand_ins
        if members is not None:
            members.discard(member)
            if not members:
                del self._members[key]
        self._stand_ins.setdefault(key, {})[member] = stand_in
        return new

    def stand_down(self, key: RoomKey, member: Member, stand_in: StandIn) -> None:
        """Give `member` its place back from `stand_in`, if it still holds it."""
        held = self._stand_ins.get(key)
        if held is not None and held.get(member) is stand_in:
            del held[member]
            if not held:
                del self._stand_ins[key]
            self._members.setdefault(key, set()).add(member)

    def remove(self, key: RoomKey, member: Member) -> bool:
        """Take `member`, or what stands in for it, out; True when that emptied the room,
        which is then forgotten."""
        members = self._members.get(key)
        held = self._stand_ins.get(key)
        if members is not None and member in members:
            members.discard(member)
            if not members:
                del self._members[key]
        elif held is not None and member in held:
            del held[member]
            if not held:
                del self._stand_ins[key]
        else:
            return False
        return key not in self._members and key not in self._stand_ins

    def empty(self, key: RoomKey) -> list[Member]:
        """Take every member out of the room, those stood in for too, and forget it."""
        members = [*self._members.pop(key, ()), *self._stand_ins.pop(key, {})]
        return members

    def has(self, key: RoomKey, member: Member) -> bool:
        return member in self._members.get(key, ()) or member in self._stand_ins.get(key, ())

    def fan_out(self, key: RoomKey, payloads: Sequence[bytes]) -> int:
        """Frame each event once and hand the same bytes to every local member: all of
        them in one buffer, so a burst costs each socket one write, not one per event.
        Returns the frames handed out."""
        members = self._members.get(key, ())
        held = self._stand_ins.get(key)
        if not members and held is None:
            return 0
        frames = [websocket_text_frame(payload) for payload in payloads]
        joined = frames[0] if len(frames) == 1 else b"".join(frames)
        for member in members:
            member.send(joined)
        count = len(members)
        if held is not None:
            for stand_in in list(held.values()):
                stand_in.take(frames)
            count += len(held)
        return count * len(frames)

    def by_tenant(self) -> Counter[str]:
        """Rooms with a member on this node, by tenant."""
        return Counter(key.tenant for key in {*self._members, *self._stand_ins})

    def __len__(self) -> int:
        return len(self._members.keys() | self._stand_ins.keys())
