"""This node's rooms: which local sockets are in which room, and local fan-out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from hub.protocol import websocket_text_frame


def room_key(tenant: str, room: str) -> str:
    """The cluster-wide name of a tenant's room; tenants cannot contain ':', rooms can."""
    return f"{tenant}:{room}"


class Member(Protocol):
    def send(self, frame: bytes) -> None:
        """Take an already-framed message without blocking and without leaving any room."""

    def deliver(self, joined: bytes, frames: Sequence[bytes]) -> None:
        """Take a room's events: `frames`, and the same frames as one `joined` buffer."""


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

    def fan_out(self, key: str, payloads: Sequence[bytes]) -> int:
        """Frame each event once and hand the same bytes to every local member: all of
        them in one buffer, so a burst costs each socket one write, not one per event.
        Returns the frames handed out."""
        members = self._members.get(key)
        if not members:
            return 0
        frames = [websocket_text_frame(payload) for payload in payloads]
        joined = frames[0] if len(frames) == 1 else b"".join(frames)
        for member in members:
            member.deliver(joined, frames)
        return len(members) * len(frames)

    def __len__(self) -> int:
        return len(self._members)
