"""Every op of a session, on a whole node in this process (memory broker)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest

from hub.broker import BrokerUnavailable, HistoryPage, MemoryBroker, Outgoing
from hub.broker.base import Claim, Sent
from hub.disconnect import BINARY_FRAME, RATE_LIMITED, SLOW_CONSUMER, TOKEN_EXPIRED, Gone
from hub.errors import ErrorCode
from hub.history import Retention
from hub.protocol import Close
from hub.rooms import RoomKey
from hub.stats import Dropped
from tests.inprocess import running
from tests.support import token

DASHBOARD = token("dashboard", "d1")
OPERATOR = token("operator", "o1", publish=["location:*"])


async def test_a_device_is_welcomed_into_its_own_rooms_and_goes_online() -> None:
    async with running() as hub:
        status = await hub.connect(DASHBOARD)
        assert (await status.answer({"op": "subscribe", "room": "status", "ref": 1}))[
            "type"
        ] == "ack"
        device = await hub.connect(token("device", "p1", loc="lobby", groups=["g"]))
        welcome = device.wire.frames()[0]
        assert welcome["rooms"] == ["device:p1", "devices", "location:lobby", "group:g"]
        assert welcome["heartbeat"] == {"interval": 15.0, "timeout": 45.0}
        online = await status.next()
        assert (online["event"], online["data"]) == (
            "device.online",
            {"device": "p1", "node": "core", "loc": "lobby"},
        )


async def test_ping_is_answered_with_its_ref() -> None:
    async with running() as hub:
        socket = await hub.connect(DASHBOARD)
        pong = await socket.answer({"op": "ping", "ref": "p"})
        assert pong == {"type": "pong", "ref": "p", "time": pong["time"]}
        assert abs(pong["time"] - time.time() * 1000) < 60_000


async def test_publish_is_acknowledged_and_reaches_the_room_once() -> None:
    async with running() as hub:
        watcher = await hub.connect(DASHBOARD)
        ack = await watcher.answer({"op": "subscribe", "room": "location:hall", "ref": 1})
        assert (ack["recovered"], ack["last"]) == (False, None)
        publisher = await hub.connect(OPERATOR)
        sent = {"op": "publish", "room": "location:hall", "event": "x.hi", "data": {"n": 1}}
        answer = await publisher.answer({**sent, "ref": 9})
        assert answer["type"] == "ack"
        assert answer["ref"] == 9
        event = await watcher.next()
        assert (event["event"], event["data"], event["id"]) == ("x.hi", {"n": 1}, answer["id"])
        await watcher.settled()
        assert [f["type"] for f in watcher.wire.frames()].count("event") == 1


async def test_subscribe_with_since_replays_what_was_missed_before_the_ack() -> None:
    async with running() as hub:
        ids = [
            (await hub.publish("acme", ["location:hall"], "x.n", {"n": n})).ids["location:hall"]
            for n in range(5)
        ]
        socket = await hub.connect(DASHBOARD)
        first = await socket.answer({"op": "subscribe", "room": "location:hall", "ref": 1})
        since = {"op": "subscribe", "room": "location:hall", "ref": 2, "since": ids[1]}
        socket.send({**since, "epoch": first["epoch"]})
        replayed = [await socket.next() for _ in range(3)]
        assert [event["id"] for event in replayed] == ids[2:]
        ack = await socket.next()
        assert (ack["type"], ack["recovered"], ack["last"]) == ("ack", True, ids[-1])


async def test_unsubscribe_stops_events_and_is_acknowledged_even_when_not_subscribed() -> None:
    async with running() as hub:
        socket = await hub.connect(DASHBOARD)
        await socket.answer({"op": "subscribe", "room": "location:hall", "ref": 1})
        ack = await socket.answer({"op": "unsubscribe", "room": "location:hall", "ref": 2})
        assert ack == {"type": "ack", "ref": 2, "room": "location:hall"}
        assert len(hub.parts.node.rooms) == 0
        again = await socket.answer({"op": "unsubscribe", "room": "location:hall", "ref": 3})
        assert again["type"] == "ack"


async def test_a_heartbeat_reaches_status_and_presence() -> None:
    async with running() as hub:
        status = await hub.connect(DASHBOARD)
        await status.answer({"op": "subscribe", "room": "status", "ref": 1})
        device = await hub.connect(token("device", "p1"))
        assert (await status.next())["event"] == "device.online"
        device.send({"op": "heartbeat", "data": {"status": "playing", "cpu": 0.5}})
        beat = await status.next()
        assert (beat["event"], beat["data"]) == (
            "device.heartbeat",
            {"device": "p1", "status": "playing", "cpu": 0.5},
        )
        (member,) = await hub.parts.presence.members(RoomKey("acme", "devices"))
        assert member["heartbeat"]["status"] == "playing"


@pytest.mark.parametrize(
    ("frame", "code", "words"),
    [
        ("{", ErrorCode.BAD_REQUEST, "not valid JSON"),
        ({"op": "dance", "ref": 1}, ErrorCode.NOT_FOUND, "unknown op"),
        ({"op": "subscribe", "room": "x", "tenant": "globex", "ref": 1}, ErrorCode.FORBIDDEN, ""),
        ({"op": "publish", "room": "devices", "event": "x.a", "data": {}}, ErrorCode.FORBIDDEN, ""),
        ({"op": "heartbeat", "data": {"status": "ok"}, "ref": 1}, ErrorCode.FORBIDDEN, "devices"),
    ],
)
async def test_refusals_are_error_frames_with_the_ref(
    frame: dict[str, object] | str, code: ErrorCode, words: str
) -> None:
    async with running() as hub:
        socket = await hub.connect(DASHBOARD)
        socket.send(frame)
        error = await socket.next()
        assert error["type"] == "error"
        assert error["code"] == code
        assert words in error["message"]
        assert error["ref"] == (frame.get("ref") if isinstance(frame, dict) else None)
        registry = hub.metrics.registry
        assert registry.get_sample_value("hub_refusals_total", {"code": code.value}) == 1


async def test_a_device_may_not_subscribe_to_status() -> None:
    async with running() as hub:
        device = await hub.connect(token("device", "p1"))
        error = await device.answer({"op": "subscribe", "room": "status", "ref": 5})
        assert (error["code"], error["ref"]) == (ErrorCode.FORBIDDEN, 5)


async def test_a_flood_is_refused_then_closed_with_4029() -> None:
    async with running(client_rate=1, client_burst=2) as hub:
        socket = await hub.connect(DASHBOARD)
        for n in range(6):
            socket.send({"op": "ping", "ref": n})
        await asyncio.wait_for(socket.task, 2)
        frames = socket.wire.frames()
        assert [f["type"] for f in frames[1:3]] == ["pong", "pong"]
        assert (frames[3]["code"], frames[3]["ref"]) == (ErrorCode.RATE_LIMITED, 2)
        assert socket.wire.cause is RATE_LIMITED
        assert hub.parts.tally.dropped[Dropped.RATE_LIMITED] >= 3


async def test_a_binary_frame_closes_with_1003_and_the_device_goes_offline_for_policy() -> None:
    async with running() as hub:
        status = await hub.connect(DASHBOARD)
        await status.answer({"op": "subscribe", "room": "status", "ref": 1})
        device = await hub.connect(token("device", "p1"))
        await status.next()
        device.send(b"\x00")
        await asyncio.wait_for(device.task, 2)
        assert device.wire.cause is BINARY_FRAME
        assert BINARY_FRAME.code is Close.UNSUPPORTED_DATA
        offline = await status.next()
        assert (offline["event"], offline["data"]["reason"]) == ("device.offline", "policy")


async def test_an_expired_token_closes_with_1008() -> None:
    async with running() as hub:
        socket = await hub.connect(token("dashboard", "d", ttl=2))
        await asyncio.wait_for(socket.task, 4)
        assert socket.wire.cause is TOKEN_EXPIRED
        assert TOKEN_EXPIRED.gone is Gone.TOKEN_EXPIRED


async def test_a_peer_that_stops_taking_frames_is_shed_and_the_rest_is_counted_dropped() -> None:
    async with running(send_queue_bytes=4096) as hub:
        slow = await hub.connect(DASHBOARD)
        await slow.answer({"op": "subscribe", "room": "location:hall", "ref": 1})
        slow.wire.waiting = 10_000
        hub.publish("acme", ["location:hall"], "x.n", {"n": 0})
        await asyncio.sleep(0)  # the turn that fans out: the write that overflows
        written = len(slow.wire.writes)
        for _ in range(2):  # before the close goes out, in the same turn
            slow.session.sender.send(b"\x81\x02{}")
        assert len(slow.wire.writes) == written
        await asyncio.wait_for(slow.task, 2)
        assert slow.wire.cause is SLOW_CONSUMER
        assert hub.parts.tally.dropped[Dropped.SLOW_CONSUMER] == 2


class _BrokenPublish(MemoryBroker):
    def publish_soon(
        self, messages: Sequence[Outgoing], claim: Claim | None = None, trace: bytes = b""
    ) -> asyncio.Future[Sent]:
        failed: asyncio.Future[Sent] = asyncio.get_running_loop().create_future()
        failed.set_exception(RuntimeError("a bug"))
        return failed


async def test_a_publish_that_fails_unexpectedly_is_answered_and_the_socket_closed() -> None:
    async with running(_BrokenPublish()) as hub:
        socket = await hub.connect(OPERATOR)
        frame = {"op": "publish", "room": "location:a", "event": "x.a", "data": {}, "ref": 4}
        answer = await socket.answer(frame)
        assert (answer["type"], answer["ref"], answer["code"]) == ("error", 4, "unavailable")
        await asyncio.wait_for(socket.task, 2)
        assert socket.wire.cause is not None
        assert socket.wire.cause.code is Close.INTERNAL


class _HistoryDown(MemoryBroker):
    async def history(
        self,
        key: RoomKey,
        since: str | None,
        limit: int,
        retention: Retention,
        *,
        state: bool = False,
    ) -> HistoryPage:
        raise BrokerUnavailable("history is down")


async def test_a_failed_subscribe_leaves_no_room_behind() -> None:
    async with running(_HistoryDown()) as hub:
        socket = await hub.connect(DASHBOARD)
        since = {"op": "subscribe", "room": "location:a", "since": "1-0", "ref": 1}
        answer = await socket.answer(since)
        assert answer["code"] == "unavailable"
        assert len(hub.parts.node.rooms) == 0
        socket.disconnect()
        await asyncio.wait_for(socket.task, 2)
        assert len(hub.parts.node.rooms) == 0


async def test_many_publishes_in_flight_are_acknowledged_in_order() -> None:
    async with running() as hub:
        socket = await hub.connect(OPERATOR)
        for n in range(100):
            socket.send(
                {"op": "publish", "room": "location:a", "event": "x.n", "data": {}, "ref": n}
            )
        acks = [await socket.next() for _ in range(100)]
        assert [ack["ref"] for ack in acks] == list(range(100))
        ids = [ack["id"] for ack in acks]
        assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))
        assert time.time() * 1000 >= acks[-1]["ts"]
