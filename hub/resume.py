"""Subscribe with resume: join a room and replay what a member missed after `since`,
without a gap or a repeat, while the room's live events keep arriving.

A stand-in (`Seam`) takes the member's place in the room first, so events published from
then on are kept; the history read that follows holds every earlier one, and the room's
state as it was then, so no state event published after that snapshot is missed either.
Live events published before the read can still be on their way from the broker when its
answer arrives, so the seam then forwards only events newer than the last one replayed,
and gives the member its place back as soon as one such event has passed. The replay goes
before the ack, and what the seam kept after it: a client takes the ack's state as its
snapshot and what follows as newer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from hub.broker import HistoryPage
from hub.envelope import id_of, live
from hub.history import Retention, parse_id
from hub.protocol import websocket_text_frame
from hub.rooms import Member, RoomKey, Rooms

Occupy = Callable[[RoomKey, Member, bool], Awaitable[None]]
"""Wait until a room just entered (`True` when new on this node) gets its events."""
ReadHistory = Callable[[RoomKey, str | None, int, Retention], Awaitable[HistoryPage]]
"""Reads a room's history and its state in one atomic step."""


@dataclass(frozen=True, slots=True)
class Subscribed:
    """A live subscription, and the frames that bring its member up to date first."""

    epoch: str
    last: str | None
    recovered: bool
    replay: list[bytes]
    """What the member missed, from history: it goes before the ack."""
    live: list[bytes]
    """Events the seam kept that the read did not hold: they go after the ack, which is
    where the contract has a client look for events newer than its snapshot."""
    state: list[bytes]
    """The room's current state, read with the history: what the ack carries."""


class Seam:
    """Keeps a room's events for a member until `release`, then forwards the newer ones
    until the first has passed, and hands the member its place back (`settle`)."""

    __slots__ = ("_after", "_frames", "_member", "_settle")

    def __init__(self, member: Member, settle: Callable[[Seam], None]) -> None:
        self._member = member
        self._settle: Callable[[Seam], None] | None = settle
        self._frames: list[bytes] | None = []
        self._after: tuple[int, int] | None = None

    def take(self, frames: Sequence[bytes]) -> None:
        kept = self._frames
        if kept is not None:
            kept.extend(frames)
            return
        for frame in frames:
            if self._after is not None and id_of(frame) <= self._after:
                continue
            self._member.send(frame)
            self._after = None
            settle, self._settle = self._settle, None
            if settle is not None:
                settle(self)

    def release(self, after: tuple[int, int] | None) -> list[bytes]:
        """Switch to forwarding; return the kept events newer than `after`."""
        kept, self._frames = self._frames or [], None
        self._after = after
        return [frame for frame in kept if after is None or id_of(frame) > after]


class Resumes:
    """One node's subscribes with resume."""

    def __init__(self, rooms: Rooms, occupy: Occupy, read: ReadHistory) -> None:
        self._rooms = rooms
        self._occupy = occupy
        self._read = read

    async def subscribe(
        self,
        key: RoomKey,
        member: Member,
        since: str | None,
        epoch: str | None,
        retention: Retention,
    ) -> Subscribed:
        """Join `key` (or stay in it), replaying what `member` missed after `since`."""
        rooms = self._rooms
        seam = Seam(member, lambda done: self._settle(key, member, done))
        await self._occupy(key, member, rooms.stand_in(key, member, seam))
        size = retention.size
        try:
            page = await self._read(key, since, size if since is not None else 0, retention)
        except BaseException:
            for frame in seam.release(None):
                member.send(frame)
            rooms.stand_down(key, member, seam)
            raise
        if size <= 0:
            return Subscribed(page.epoch, page.last, False, [], seam.release(None), page.state)
        now = int(time.time() * 1000)
        replay = [websocket_text_frame(event) for event in live(page.events, now)]
        if page.events:
            after: tuple[int, int] | None = id_of(page.events[-1])
        elif since is not None:
            after = parse_id(since)
        else:
            after = parse_id(page.last) if page.last else None
        recovered = page.recovers(since, epoch)
        return Subscribed(page.epoch, page.last, recovered, replay, seam.release(after), page.state)

    def _settle(self, key: RoomKey, member: Member, seam: Seam) -> None:
        """Give a seam's place back to its member, outside any fan-out loop."""
        asyncio.get_running_loop().call_soon(self._rooms.stand_down, key, member, seam)
