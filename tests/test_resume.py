"""The resume seam, coalesced fan-out and room membership, in this process."""

from __future__ import annotations

import asyncio

import pytest

from hub import envelope
from hub.broker import HistoryPage, MemoryBroker
from hub.disconnect import Disconnect
from hub.history import Retention
from hub.node import Node
from hub.protocol import websocket_text_frame
from hub.resume import Resumes, Seam
from hub.rooms import Member, RoomKey, Rooms
from tests.inprocess import read_frames, running

KEY = RoomKey("acme", "location:hall")
KEEP = Retention(100, 60.0)


class Inbox:
    """A member that keeps every write it is handed."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def send(self, frame: bytes) -> None:
        self.writes.append(frame)

    def close(self, cause: Disconnect) -> None:
        raise AssertionError(f"closed: {cause}")

    def ids(self) -> list[str]:
        return [frame["id"] for write in self.writes for frame in read_frames(write)]


def event(n: int) -> bytes:
    """An encoded event with id `n-0`."""
    prefix, suffix = envelope.parts(envelope.encode("r", "x.n", {"n": n}, 1), keeps_history=True)
    return prefix + f"{n}-0".encode() + suffix


def test_a_seam_keeps_then_forwards_only_newer_events_and_settles_once() -> None:
    inbox, settled = Inbox(), list[Seam]()
    seam = Seam(inbox, settled.append)
    seam.take([websocket_text_frame(event(n)) for n in (1, 2, 3)])
    assert inbox.writes == []
    assert [read_frames(f)[0]["id"] for f in seam.release((3, 0))] == []
    seam.take([websocket_text_frame(event(n)) for n in (2, 3)])
    assert inbox.writes == []
    assert settled == []
    seam.take([websocket_text_frame(event(n)) for n in (4, 5)])
    assert inbox.ids() == ["4-0", "5-0"]
    assert settled == [seam]


async def test_a_resume_has_no_gap_and_no_repeat_while_live_events_race_the_history() -> None:
    rooms, inbox = Rooms(), Inbox()
    history_read = asyncio.Event()

    async def occupy(key: RoomKey, member: Member, new: bool) -> None:
        assert new

    async def read(key: RoomKey, since: str | None, limit: int, kept: Retention) -> HistoryPage:
        # Events 3 and 4 are published while the read is on its way; 4 reaches this node
        # before the read's answer, 3 and 4 are in it, 5 arrives after.
        rooms.fan_out(key, [event(4)])
        history_read.set()
        return HistoryPage("e", [event(3), event(4)], "4-0", (0, 0), held=True)

    resumes = Resumes(rooms, occupy, read)
    done = await resumes.subscribe(KEY, inbox, "2-0", "e", KEEP)
    assert done.recovered
    assert [read_frames(f)[0]["id"] for f in done.replay] == ["3-0", "4-0"]
    assert done.live == []
    rooms.fan_out(KEY, [event(4), event(5)])  # 4 again, late from the broker
    await asyncio.sleep(0)  # the seam gives its place back outside the fan-out
    rooms.fan_out(KEY, [event(6)])
    assert inbox.ids() == ["5-0", "6-0"]
    assert rooms.has(KEY, inbox)


async def test_an_event_newer_than_the_read_goes_after_the_ack_not_before() -> None:
    """A subscribe without `since`: the ack's state is the snapshot, and a client takes what
    comes before the ack as older than it. An event published after the read that reached
    the seam before the read's answer is live: it must follow the ack."""
    rooms = Rooms()

    async def occupy(key: RoomKey, member: Member, new: bool) -> None:
        assert new

    async def read(key: RoomKey, since: str | None, limit: int, kept: Retention) -> HistoryPage:
        rooms.fan_out(key, [event(3), event(4)])  # 3 before the snapshot, 4 after it
        return HistoryPage("e", [], "3-0", (0, 0), state=[event(3)])

    done = await Resumes(rooms, occupy, read).subscribe(KEY, Inbox(), None, None, KEEP)
    assert done.replay == []
    assert [read_frames(f)[0]["id"] for f in done.live] == ["4-0"]


async def test_a_resume_with_another_epoch_or_a_trimmed_since_is_not_recovered() -> None:
    rooms = Rooms()

    async def occupy(key: RoomKey, member: Member, new: bool) -> None:
        """Already subscribed."""

    async def read(key: RoomKey, since: str | None, limit: int, kept: Retention) -> HistoryPage:
        return HistoryPage("e", [event(9)], "9-0", (5, 0))

    resumes = Resumes(rooms, occupy, read)
    assert not (await resumes.subscribe(KEY, Inbox(), "7-0", "other", KEEP)).recovered
    assert not (await resumes.subscribe(KEY, Inbox(), "4-0", "e", KEEP)).recovered
    assert (await resumes.subscribe(KEY, Inbox(), "5-0", "e", KEEP)).recovered


@pytest.mark.parametrize(
    ("since", "held", "trimmed", "expected"),
    [
        ("0-0", False, (0, 0), True),  # nothing seen, and nothing dropped
        ("0-0", False, (8, 0), False),  # nothing seen, and retention dropped events
        ("7-0", False, (0, 0), False),  # an id the history does not hold: aged out, or lost
        ("7-0", False, (7, 0), True),  # the newest id retention dropped: nothing after it
        ("7-0", True, (8, 0), False),  # retention dropped events after it
        ("9-0", True, (0, 0), True),
        ("nine", True, (0, 0), False),
    ],
)
def test_a_since_is_recovered_only_within_the_present_history(
    since: str, held: bool, trimmed: tuple[int, int], expected: bool
) -> None:
    page = HistoryPage("e", [], None, trimmed, held=held)
    assert page.recovers(since, "e") is expected
    assert not page.recovers(since, "another")


def test_a_burst_reaches_each_member_in_one_write_and_stand_ins_frame_by_frame() -> None:
    rooms, a, b = Rooms(), Inbox(), Inbox()
    assert rooms.add(KEY, a)
    assert not rooms.add(KEY, b)
    seam = Seam(Inbox(), lambda done: None)
    rooms.stand_in(KEY, Inbox(), seam)
    assert rooms.fan_out(KEY, [event(1), event(2), event(3)]) == 9
    assert len(a.writes) == len(b.writes) == 1
    assert a.ids() == ["1-0", "2-0", "3-0"]
    assert len(seam.release(None)) == 3


def test_a_room_is_forgotten_when_its_last_member_or_stand_in_leaves() -> None:
    rooms, member, other = Rooms(), Inbox(), Inbox()
    rooms.add(KEY, member)
    rooms.stand_in(KEY, other, Seam(other, lambda done: None))
    assert not rooms.remove(KEY, member)
    assert not rooms.remove(KEY, member)
    assert rooms.remove(KEY, other)
    assert len(rooms) == 0


class CountingBroker(MemoryBroker):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, RoomKey]] = []

    async def subscribe(self, key: RoomKey) -> None:
        self.calls.append(("subscribe", key))
        await super().subscribe(key)

    async def unsubscribe(self, key: RoomKey) -> None:
        self.calls.append(("unsubscribe", key))
        await super().unsubscribe(key)


async def test_the_node_holds_a_broker_subscription_only_while_it_has_members() -> None:
    broker = CountingBroker()
    async with running(broker) as hub:
        node: Node = hub.parts.node
        a, b = Inbox(), Inbox()
        await node.join(KEY, a)
        await node.join(KEY, b)
        await node.subscribe(KEY, a, None, None)
        await node.leave(KEY, a)
        assert broker.calls == [("subscribe", KEY)]
        await node.leave(KEY, b)
        assert broker.calls == [("subscribe", KEY), ("unsubscribe", KEY)]
