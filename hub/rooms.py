"""This node's rooms: which local sockets are in which room, and local fan-out."""

from __future__ import annotations

from typing import Protocol

from hub.protocol import websocket_text_frame


def room_key(tenant: str, room: str) -> str:
    """The cluster-wide name of a tenant's room; tenants cannot contain ':', rooms can."""
    return f"{tenant}:{room}"


class Member(Protocol):
    def send(self, frame: bytes) -> None:
        """Take an already-framed message without blocking and without leaving any room."""


class Rooms:
    """Room key to local members. Knows nothing of brokers or other nodes."""

    def __init__(self) -> None:
        self._members: dict[str, set[Member]] = {}

    def add(self, key: str, member: Member) -> bool:
        """Put `member` in the room; True when the room is new on this node."""
        members = self._members.get(key)
        if members is None:
            self._members[key] = {member}
            return True
        members.add(member)
        return False

    def remove(self, key: str, member: Member) -> bool:
        """Take `member` out; True when that emptied the room, which is then forgotten."""
        members = self._members.get(key)
        if members is None or member not in members:
            return False
        members.discard(member)
        if members:
            return False
        del self._members[key]
        return True

    def swap(self, key: str, old: Member, new: Member) -> None:
        """Put `new` in the place of `old`, in one step: no event can fall between them."""
        members = self._members[key]
        members.discard(old)
        members.add(new)

    def has(self, key: str, member: Member) -> bool:
        members = self._members.get(key)
        return members is not None and member in members

    def fan_out(self, key: str, payload: bytes) -> int:
        """Frame `payload` once and hand the same bytes to every local member."""
        members = self._members.get(key)
        if not members:
            return 0
        frame = websocket_text_frame(payload)
        for member in members:
            member.send(frame)
        return len(members)

    def __len__(self) -> int:
        return len(self._members)
