"""One suite for both backends: every promise of `Broker` and `Presence`, kept alike by the
in-process pair of a node alone and by the Redis pair of a cluster (on one redis-server and
on a Redis Cluster), so that either can take the other's place.

The pairs are built by the composition root, as a node builds them, and driven directly:
no node, no sockets. Memory presence is one node, so only what every pair promises is
tested; what a cluster adds (other nodes, dead nodes, failovers) is tested elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import orjson
import pytest
import redis
from redis.exceptions import ReadOnlyError

from hub import envelope
from hub.assembly import assemble
from hub.auth import STATUS_ROOM, Role
from hub.broker import Broker, HistoryPage, Outgoing
from hub.broker.base import Accepted, Claim, IdempotencyConflict, OutgoingReceipt, Replay
from hub.config import Settings
from hub.disconnect import Gone
from hub.errors import ErrorCode, HubError
from hub.fleet import FleetQuery
from hub.history import LAST_ID, Retention, TenantLimited, parse_id
from hub.metrics import Metrics
from hub.presence import Presence, Present
from hub.rooms import RoomKey
from tests.conftest import Redis
from tests.support import SECRET, RedisCluster, RedisServer, eventually

TENANT, OTHER = "acme", "globex"
NODE = "contract"
ROOM = RoomKey(TENANT, "location:lobby")
LIVE = RoomKey(TENANT, "live:wall")
STATUS = RoomKey(TENANT, STATUS_ROOM)
DEVICES = RoomKey(TENANT, "devices")
KEPT = Retention(1000, 3600)
NO_HISTORY = Retention(0, 3600)
ONE = Retention(1, 3600)
AGE = 0.4
"""How long the history of the tests that wait for events to age out keeps each: their
steps of just over half of it must each end well within it."""
TTL = 0.2
"""How long the tests that wait for a key or a device to be forgotten keep it: far longer
than the publish or the read right after the one that made it."""
DEADLINE = 5.0
MARK = "x.mark"
FIELDS = {"sub", "online", "loc", "groups", "node", "since", "last_seen", "heartbeat"}
FIELDS |= {"offline_reason"}
"""What the fleet lists of a device."""
PLACES: dict[str, tuple[str | None, tuple[str, ...]]] = {
    "d0": ("lobby", ("a",)),
    "d1": ("hall", ("a", "b")),
    "d2": ("lobby", ()),
    "d3": ("hall", ("b",)),
    "d4": (None, ()),
}
"""Five devices' `loc` and `groups`."""


def built(settings: Settings) -> tuple[Broker, Presence]:
    """The broker and presence a node of `settings` runs on, as the composition root
    builds them: the one place these tests know how."""
    parts = assemble(settings, Metrics())
    return parts.node.broker, parts.presence


def settings_for(where: Redis | None, **values: Any) -> Settings:
    """A node alone without a Redis, one of a cluster with it."""
    if where is not None:
        values = {"redis_url": where.url, **where.settings, **values}
    return Settings(jwt_secret=SECRET, node_id=NODE, **values)


def now_ms() -> int:
    return int(time.time() * 1000)


def event(
    key: RoomKey,
    name: str = "x.tick",
    data: Any = None,
    retention: Retention = KEPT,
    *,
    state: bool = False,
) -> Outgoing:
    """An event for `key` as a node hands it to the broker."""
    payload = envelope.encode(key.room, name, {} if data is None else data, now_ms())
    return Outgoing.of(key, payload, retention, name if state else None)


def with_id(message: Outgoing, event_id: str | None) -> bytes:
    """The bytes every subscriber gets, and history holds, once the event has its id."""
    return message.prefix + (event_id or "").encode() + message.suffix


def order(event_id: str | None) -> tuple[int, int]:
    parsed = parse_id(event_id or "")
    assert parsed is not None, event_id
    return parsed


def decoded(events: list[bytes]) -> list[dict[str, Any]]:
    return [orjson.loads(payload) for payload in events]


def claim(key: str, body: bytes, ttl_ms: int = 60_000) -> Claim:
    return Claim(key, hashlib.sha256(body).hexdigest(), now_ms(), ttl_ms)


def receipt(
    event_id: str, principal: str, status: str, key: RoomKey = ROOM, ttl: Retention = KEPT
) -> OutgoingReceipt:
    """`principal`'s receipt of an event of a room kept `ttl`, announced in `status` as a
    node announces it."""
    role, sub = principal.split(" ")
    ts = now_ms()
    said = {"sub": sub, "role": role, "room": key.room, "id": event_id, "status": status}
    payload = envelope.encode(STATUS_ROOM, "delivery.receipt", said, ts)
    record = orjson.dumps({"sub": sub, "role": role, "status": status, "time": ts})
    announce = Outgoing.of(STATUS, payload, KEPT)
    return OutgoingReceipt(key, event_id, principal, record, ttl.ttl_ms, announce)


def device(
    sub: str, conn: str | None = None, loc: str | None = None, groups: tuple[str, ...] = ()
) -> Present:
    return Present(conn or f"{sub}.1", sub, Role.DEVICE, TENANT, loc, groups)


def member(present: Present, key: RoomKey, heartbeat: Any = None) -> dict[str, Any]:
    """What presence lists for a socket in room `key`."""
    return {
        "sub": present.sub,
        "role": present.role.value,
        "node": NODE,
        "conn": present.conn,
        "since": present.rooms[key],
        "heartbeat": heartbeat,
    }


async def until(condition: Callable[[], bool], what: str) -> None:
    async def holds() -> bool:
        return condition()

    await eventually(holds, DEADLINE, what, interval=0.01)


class Backends:
    """A broker and a presence, started and stopped in a node's order, keeping what the
    broker delivers room by room."""

    def __init__(self, broker: Broker, presence: Presence) -> None:
        self.broker = broker
        self.presence = presence
        self.delivered: defaultdict[RoomKey, list[bytes]] = defaultdict(list)
        self.lost: list[RoomKey] = []
        self._arrived = asyncio.Event()
        self._marks = 0
        self._broker_on = self._presence_on = False

    def _deliver(self, key: RoomKey, payload: bytes) -> None:
        self.delivered[key].append(payload)
        self._arrived.set()

    async def start(self) -> None:
        await self.broker.connect(self._deliver, self.lost.extend)
        self._broker_on = True
        await self.presence.start()
        self._presence_on = True
        await until(lambda: self.broker.available and self.presence.ready, "the backends")

    async def stop_presence(self) -> None:
        """Stop presence alone, as a node does first: the broker still answers."""
        self._presence_on = False
        await self.presence.stop()

    async def stop(self) -> None:
        if self._presence_on:
            await self.stop_presence()
        if self._broker_on:
            self._broker_on = False
            await self.broker.disconnect()

    async def subscribe(self, *keys: RoomKey) -> None:
        for key in keys:
            await self.broker.subscribe(key)

    async def publish(self, *messages: Outgoing, trace: bytes = b"") -> list[str | None]:
        sent = await self.broker.publish_soon(messages, trace=trace)
        assert isinstance(sent, Accepted)
        return sent.ids

    async def one(self, message: Outgoing) -> str:
        """Publish one event to a room with history: its id."""
        [event_id] = await self.publish(message)
        assert event_id is not None
        return event_id

    async def history(
        self,
        key: RoomKey,
        since: str | None = None,
        limit: int = 100,
        retention: Retention = KEPT,
        *,
        state: bool = False,
    ) -> HistoryPage:
        return await self.broker.history(key, since, limit, retention, state=state)

    async def _delivery(self, holds: Callable[[], bool]) -> None:
        async with asyncio.timeout(DEADLINE):
            while not holds():
                self._arrived.clear()
                await self._arrived.wait()

    async def received(self, key: RoomKey, count: int) -> list[bytes]:
        """Everything delivered for `key`, once it is at least `count` events."""
        await self._delivery(lambda: len(self.delivered[key]) >= count)
        return list(self.delivered[key])

    async def mark(self, key: RoomKey) -> bytes:
        """Publish a marker of its own to `key`, which keeps no history of it."""
        self._marks += 1
        marker = event(key, MARK, {"n": self._marks}, NO_HISTORY)
        await self.publish(marker)
        return with_id(marker, None)

    async def marked(self, key: RoomKey) -> list[bytes]:
        """Everything delivered for `key` before a marker published now: a room's events
        arrive in order, so what was to arrive before it has."""
        marker = await self.mark(key)
        await self._delivery(lambda: marker in self.delivered[key])
        return self.delivered[key][: self.delivered[key].index(marker)]

    async def listed(self, key: RoomKey, conns: list[str]) -> None:
        """Wait until the members of `key` are the sockets `conns`, in this order."""

        async def listing() -> bool:
            return [entry["conn"] for entry in await self.presence.members(key)] == conns

        await eventually(listing, DEADLINE, f"{key.room} to list {conns}", interval=0.01)

    async def fleet(self, **query: Any) -> tuple[list[str], str | None]:
        """The subs of a page of the tenant's fleet, and the next page's `after`."""
        page = await self.presence.devices(TENANT, FleetQuery(**query))
        return [listed["sub"] for listed in page.devices], page.next


also_on_a_cluster = pytest.mark.parametrize("where", ["memory", "redis", "cluster"], indirect=True)
"""For the tests of what Redis does its own way on a cluster (events over sharded pub/sub,
every script and read routed to its tenant's shard). The others run the same Lua there,
and would only add its start-ups to the suite's time."""

Open = Callable[..., Awaitable[Backends]]
"""Starts a pair of backends on the test's settings: `await backends(history_size=5)`."""


@pytest.fixture(scope="module")
def module_redis() -> Iterator[RedisServer]:
    """One redis-server for the module's tests, emptied for each (`where`)."""
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def emptied(where: Redis) -> Redis:
    """`where` without a key: FLUSHALL sent straight to every server (a replica refuses
    it, and follows its master), which keeps each test's start short."""
    servers = where.live() if isinstance(where, RedisCluster) else [where]
    for server in servers:
        client = redis.Redis(host="127.0.0.1", port=server.port)
        with client, contextlib.suppress(ReadOnlyError):
            client.flushall()
    return where


@pytest.fixture(params=["memory", "redis"])
def where(request: pytest.FixtureRequest) -> Redis | None:
    """Where the backends keep their data: in the process, or in an empty Redis or Redis
    Cluster (`also_on_a_cluster`)."""
    if request.param == "memory":
        return None
    shared = "shared_cluster" if request.param == "cluster" else "module_redis"
    return emptied(request.getfixturevalue(shared))


@pytest.fixture
async def backends(where: Redis | None) -> AsyncIterator[Open]:
    """Starts pairs of backends for the test, and stops them after it."""
    started: list[Backends] = []

    async def open_backends(**values: Any) -> Backends:
        pair = Backends(*built(settings_for(where, **values)))
        started.append(pair)
        await pair.start()
        return pair

    yield open_backends
    for pair in started:
        await pair.stop()


# The broker: connect, subscribe, deliver, unsubscribe, disconnect.


async def test_a_broker_is_available_from_connect_to_disconnect(
    backends: Open, where: Redis | None
) -> None:
    unstarted, _ = built(settings_for(where))
    assert not unstarted.available
    hub = await backends()
    assert hub.broker.available
    assert hub.presence.ready
    await hub.stop()
    assert not hub.broker.available


async def test_disconnecting_tells_no_room_lost(backends: Open) -> None:
    """`lost` is for rooms the broker stopped carrying unasked; a disconnect is asked."""
    hub = await backends()
    await hub.subscribe(ROOM)
    await hub.stop()
    assert hub.lost == []


@also_on_a_cluster
async def test_a_subscribed_room_gets_each_event_once_as_the_bytes_published(
    backends: Open,
) -> None:
    hub = await backends()
    await hub.subscribe(ROOM)
    message = event(ROOM, data={"n": 1})
    event_id = await hub.one(message)
    [delivered] = await hub.marked(ROOM)
    assert delivered == with_id(message, event_id)
    assert orjson.loads(delivered)["id"] == event_id
    assert hub.lost == []


@also_on_a_cluster
async def test_only_subscribed_rooms_get_events_and_not_after_unsubscribing(
    backends: Open,
) -> None:
    hub = await backends()
    left, elsewhere = RoomKey(TENANT, "location:left"), RoomKey(OTHER, ROOM.room)
    never = RoomKey(TENANT, "location:never")
    await hub.subscribe(ROOM, left, elsewhere)
    await hub.one(event(left))
    await hub.received(left, 1)
    await hub.broker.unsubscribe(left)
    await hub.one(event(elsewhere))  # the same room name in another tenant
    await hub.received(elsewhere, 1)
    await hub.publish(event(left), event(never))
    assert await hub.marked(ROOM) == []
    assert (len(hub.delivered[left]), hub.delivered[never]) == (1, [])
    assert len(hub.delivered[elsewhere]) == 1


async def test_publishes_in_flight_get_increasing_ids_in_call_order(backends: Open) -> None:
    hub = await backends()
    await hub.subscribe(ROOM)
    messages = [event(ROOM, data={"n": n}) for n in range(50)]
    futures = [hub.broker.publish_soon([message]) for message in messages]
    ids = [sent.ids[0] for sent in await asyncio.gather(*futures) if isinstance(sent, Accepted)]
    assert len(ids) == len(messages)
    assert [order(event_id) for event_id in ids] == sorted({order(each) for each in ids})
    delivered = await hub.received(ROOM, len(messages))
    assert delivered == [with_id(m, event_id) for m, event_id in zip(messages, ids, strict=True)]
    assert (await hub.history(ROOM)).events == delivered


@also_on_a_cluster
async def test_one_publish_to_several_rooms_gives_ids_only_where_history_is_kept(
    backends: Open,
) -> None:
    hub = await backends()
    await hub.subscribe(ROOM, LIVE)
    kept, unkept = event(ROOM), event(LIVE, retention=NO_HISTORY)
    event_id, none = await hub.publish(kept, unkept)
    assert none is None
    assert await hub.received(ROOM, 1) == [with_id(kept, event_id)]
    assert await hub.received(LIVE, 1) == [with_id(unkept, None)]
    assert "id" not in orjson.loads(hub.delivered[LIVE][0])
    page = await hub.history(LIVE)
    assert (page.events, page.last) == ([], None)


async def test_a_trace_goes_in_front_of_the_delivered_events_and_nowhere_else(
    backends: Open,
) -> None:
    hub = await backends()
    await hub.subscribe(ROOM)
    carrier = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    message = event(ROOM)
    [event_id] = await hub.publish(message, trace=carrier)
    assert await hub.received(ROOM, 1) == [envelope.traced(carrier, with_id(message, event_id))]
    assert (await hub.history(ROOM)).events == [with_id(message, event_id)]


# History: since, limit, epoch, `LAST_ID`, retention.


@also_on_a_cluster
async def test_history_reads_the_events_after_since_oldest_first_up_to_limit(
    backends: Open,
) -> None:
    hub = await backends()
    messages = [event(ROOM, data={"n": n}) for n in range(5)]
    ids = [await hub.one(message) for message in messages]
    events = [with_id(m, event_id) for m, event_id in zip(messages, ids, strict=True)]
    whole = await hub.history(ROOM)
    assert (whole.events, whole.last, whole.trimmed) == (events, ids[-1], (0, 0))
    page = await hub.history(ROOM, ids[1], limit=2)
    assert (page.events, page.last, page.epoch) == (events[2:4], ids[-1], whole.epoch)
    assert page.held
    assert (await hub.history(ROOM, ids[1], limit=0)).events == []
    assert (await hub.history(ROOM, ids[-1])).events == []
    newest = await hub.history(ROOM, LAST_ID)  # where the room is, and no event
    assert (newest.events, newest.last, newest.held) == ([], ids[-1], False)
    assert newest.epoch == whole.epoch


async def test_a_room_has_its_epoch_before_its_first_event_and_no_other_epoch_recovers(
    backends: Open,
) -> None:
    hub = await backends()
    empty = await hub.history(ROOM)
    assert (empty.events, empty.last, empty.trimmed) == ([], None, (0, 0))
    assert empty.recovers("0-0", empty.epoch)  # nothing seen, nothing missed
    message = event(ROOM)
    first = await hub.one(message)
    await hub.one(event(ROOM))
    page = await hub.history(ROOM, "0-0", limit=1)
    assert (page.epoch, page.events) == (empty.epoch, [with_id(message, first)])
    assert page.recovers("0-0", empty.epoch)
    after = await hub.history(ROOM, first)
    assert after.recovers(first, empty.epoch)
    assert not after.recovers(first, "another")
    assert not after.recovers(first, None)
    assert not after.recovers(None, empty.epoch)


async def test_history_keeps_the_newest_events_and_remembers_the_newest_dropped(
    backends: Open,
) -> None:
    hub = await backends()
    three = Retention(3, 3600)
    messages = [event(ROOM, data={"n": n}, retention=three) for n in range(5)]
    ids = [await hub.one(message) for message in messages]
    page = await hub.history(ROOM, retention=three)
    assert page.events == [with_id(m, i) for m, i in zip(messages[2:], ids[2:], strict=True)]
    assert page.trimmed == order(ids[1])
    for since, recovered in [(ids[0], False), ("0-0", False), (ids[1], True), (ids[3], True)]:
        read = await hub.history(ROOM, since, retention=three)
        assert read.recovers(since, page.epoch) is recovered, since


async def test_events_past_their_age_are_dropped_then_the_idle_room_is_forgotten(
    backends: Open,
) -> None:
    hub = await backends()
    brief = Retention(100, AGE)
    first, second = [await hub.one(event(ROOM, retention=brief)) for _ in range(2)]
    await asyncio.sleep(AGE * 0.55)
    third = await hub.one(event(ROOM, retention=brief))  # the room is not idle
    await asyncio.sleep(AGE * 0.55)
    fourth = await hub.one(event(ROOM, retention=brief))  # the first two are past their age
    page = await hub.history(ROOM, first, retention=brief)
    assert [envelope.id_of(each) for each in page.events] == [order(third), order(fourth)]
    assert page.trimmed == order(second)
    assert not page.recovers(first, page.epoch)
    assert page.recovers(second, page.epoch)
    assert await hub.broker.receipt_soon(receipt(fourth, "device p1", "done", ttl=brief))
    await asyncio.sleep(AGE + 0.05)
    gone = await hub.history(ROOM, fourth, retention=brief)
    assert (gone.events, gone.last, gone.epoch) == ([], None, page.epoch)
    assert await hub.broker.receipts(ROOM, fourth) == []  # kept as long as their event
    assert not gone.recovers(fourth, gone.epoch)
    assert order(await hub.one(event(ROOM, retention=brief))) > order(fourth)


async def test_history_holds_no_event_past_its_age_even_before_the_next_publish(
    backends: Open,
) -> None:
    hub = await backends()
    brief = Retention(100, AGE)
    old = await hub.one(event(ROOM, retention=brief))
    await asyncio.sleep(AGE * 0.55)
    young = await hub.one(event(ROOM, retention=brief))
    await asyncio.sleep(AGE * 0.55)  # `old` is past its age, `young` is not
    page = await hub.history(ROOM, retention=brief)
    assert [envelope.id_of(each) for each in page.events] == [order(young)]
    assert page.trimmed == order(old)
    assert not page.recovers("0-0", page.epoch)


# What a publish may be refused for, and what it claims.


@also_on_a_cluster
async def test_a_tenant_with_all_its_history_rooms_is_refused_a_publish_whole(
    backends: Open,
) -> None:
    hub = await backends(tenant_history_rooms=2)
    hall, third = RoomKey(TENANT, "location:hall"), RoomKey(TENANT, "location:third")
    await hub.subscribe(ROOM)
    await hub.one(event(ROOM))
    await hub.one(event(hall))
    with pytest.raises(TenantLimited) as refused:
        await hub.publish(event(ROOM), event(third))
    assert refused.value.bound == "history_rooms"
    assert len(await hub.marked(ROOM)) == 1
    assert len((await hub.history(ROOM)).events) == 1
    assert (await hub.history(third)).last is None
    await hub.publish(event(third, retention=NO_HISTORY))  # keeps no history: not counted
    layout = event(LIVE, "x.screen.layout", {"grid": 4}, NO_HISTORY, state=True)
    with pytest.raises(TenantLimited):
        await hub.publish(layout)  # keeps state: counted as history
    await hub.one(event(RoomKey(OTHER, third.room)))  # each tenant has its own rooms


async def test_a_tenant_past_its_bytes_is_refused_with_the_time_to_wait(backends: Open) -> None:
    hub = await backends(tenant_publish_bytes=1000, tenant_publish_burst=65536)
    big = {"blob": "x" * 40_000}
    await hub.one(event(ROOM, data=big))
    with pytest.raises(TenantLimited) as refused:
        await hub.publish(event(ROOM, data=big))
    assert refused.value.bound == "publish_bytes"
    assert refused.value.retry_after is not None
    assert refused.value.retry_after > 0
    assert len((await hub.history(ROOM)).events) == 1
    await hub.one(event(RoomKey(OTHER, ROOM.room), data=big))  # each tenant has its bytes


@also_on_a_cluster
async def test_a_claimed_key_answers_later_publishes_as_the_first_and_publishes_nothing(
    backends: Open,
) -> None:
    hub = await backends()
    await hub.subscribe(ROOM)
    both = [event(ROOM), event(LIVE, retention=NO_HISTORY)]
    first, again = claim("retry-1", b"reboot"), claim("retry-1", b"reboot")
    accepted = await hub.broker.publish_soon(both, first)
    assert isinstance(accepted, Accepted)
    assert accepted.ids[1] is None
    assert await hub.broker.publish_soon(both, again) == Replay(
        accepted.ids, first.ts, accepted.reach
    )
    with pytest.raises(IdempotencyConflict):
        await hub.broker.publish_soon([event(ROOM)], claim("retry-1", b"shutdown"))
    assert len(await hub.marked(ROOM)) == 1
    assert len((await hub.history(ROOM)).events) == 1
    elsewhere = await hub.broker.publish_soon([event(RoomKey(OTHER, ROOM.room))], again)
    assert isinstance(elsewhere, Accepted)  # another tenant's keys are its own


async def test_a_refused_publish_claims_no_key_and_a_key_is_free_after_its_ttl(
    backends: Open,
) -> None:
    hub = await backends(tenant_history_rooms=1)
    await hub.one(event(ROOM))
    with pytest.raises(TenantLimited):
        await hub.broker.publish_soon([event(RoomKey(TENANT, "location:hall"))], claim("k", b"a"))
    brief = claim("k", b"a", ttl_ms=int(TTL * 1000))
    assert isinstance(await hub.broker.publish_soon([event(ROOM)], brief), Accepted)
    assert isinstance(await hub.broker.publish_soon([event(ROOM)], brief), Replay)
    await asyncio.sleep(TTL + 0.05)
    assert isinstance(await hub.broker.publish_soon([event(ROOM)], claim("k", b"b")), Accepted)


# State, and receipts.


@also_on_a_cluster
async def test_the_newest_event_of_each_state_name_is_kept_and_outlives_history(
    backends: Open,
) -> None:
    hub = await backends()
    await hub.subscribe(ROOM)
    content = [event(ROOM, "content.update", {"version": v}, ONE, state=True) for v in (1, 2)]
    playlist = event(ROOM, "playlist.update", {"playlist_id": "p"}, ONE, state=True)
    alert = event(ROOM, "alert", {"level": "info", "message": "hi"}, ONE)
    for message in (content[0], playlist, content[1], alert):
        await hub.one(message)
    delivered = await hub.received(ROOM, 4)
    kept = sorted(delivered[1:3])  # the playlist and the newest content
    page = await hub.history(ROOM, retention=ONE, state=True)
    assert (page.events, sorted(page.state)) == (delivered[3:], kept)
    assert (await hub.history(ROOM, retention=ONE)).state == []  # only when asked for
    layout = event(LIVE, "x.screen.layout", {"grid": 4}, NO_HISTORY, state=True)
    await hub.publish(layout)  # a room without history keeps state too, without ids
    none = RoomKey(TENANT, "location:none")
    states = await hub.broker.states([ROOM, LIVE, none])
    assert [sorted(each) for each in states] == [kept, [with_id(layout, None)], []]


@also_on_a_cluster
async def test_a_receipt_is_stored_announced_and_replaced_by_the_principals_next(
    backends: Open,
) -> None:
    hub = await backends()
    await hub.subscribe(STATUS)
    event_id = await hub.one(event(ROOM, "command", {"name": "reboot"}))
    got = receipt(event_id, "device p1", "received")
    assert await hub.broker.receipt_soon(got) is True
    [announced] = await hub.received(STATUS, 1)
    assert announced.startswith(got.announce.prefix)
    assert (await hub.history(STATUS)).events == [announced]
    assert await hub.broker.receipts(ROOM, event_id) == [got.record]
    done, other = receipt(event_id, "device p1", "done"), receipt(event_id, "device p2", "done")
    assert await hub.broker.receipt_soon(done) is True
    assert await hub.broker.receipt_soon(other) is True
    assert sorted(await hub.broker.receipts(ROOM, event_id)) == sorted([done.record, other.record])
    assert len(await hub.received(STATUS, 3)) == 3


async def test_a_receipt_for_an_event_not_in_history_is_refused_and_not_announced(
    backends: Open,
) -> None:
    hub = await backends()
    await hub.subscribe(STATUS)
    dropped = await hub.one(event(ROOM, retention=ONE))
    kept = await hub.one(event(ROOM, retention=ONE))
    none = RoomKey(TENANT, "location:none")
    for key, event_id in [(ROOM, dropped), (ROOM, "1-0"), (none, kept)]:
        assert await hub.broker.receipt_soon(receipt(event_id, "device p1", "done", key)) is False
        assert await hub.broker.receipts(key, event_id) == []
    assert await hub.broker.receipt_soon(receipt(kept, "device p1", "done")) is True
    assert len(await hub.marked(STATUS)) == 1


# Presence: the lifecycle events, members, heartbeats, the fleet, stopping.


@also_on_a_cluster
async def test_a_device_goes_online_with_its_first_socket_and_offline_with_its_last(
    backends: Open,
) -> None:
    hub = await backends()
    await hub.subscribe(STATUS)
    first, second = device("p1", "p1.1", "lobby"), device("p1", "p1.2", "lobby")
    await hub.presence.connect(first, [DEVICES])
    await hub.presence.connect(second, [DEVICES])
    await hub.mark(STATUS)
    hub.presence.disconnect(first, Gone.CLOSED)
    hub.presence.disconnect(second, Gone.HEARTBEAT_TIMEOUT)
    online, mark, offline = decoded(await hub.received(STATUS, 3))
    assert (online["event"], online["data"]) == (
        "device.online",
        {"device": "p1", "node": NODE, "loc": "lobby"},
    )
    assert mark["event"] == MARK
    assert (offline["event"], offline["data"]) == (
        "device.offline",
        {"device": "p1", "node": NODE, "reason": "heartbeat_timeout"},
    )
    history = await hub.history(STATUS)  # the events are the room's, with their ids
    assert history.events == [hub.delivered[STATUS][0], hub.delivered[STATUS][2]]
    assert len(await hub.marked(STATUS)) == 3


async def test_a_device_that_comes_back_goes_online_again(backends: Open) -> None:
    hub = await backends()
    await hub.subscribe(STATUS)
    before = device("p1")
    await hub.presence.connect(before, [DEVICES])
    hub.presence.disconnect(before, Gone.SLOW_CONSUMER)
    await hub.received(STATUS, 2)
    await hub.presence.connect(device("p1", "p1.2"), [DEVICES])
    statuses = decoded(await hub.received(STATUS, 3))
    events = [(each["event"], each["data"].get("reason")) for each in statuses]
    assert events == [
        ("device.online", None),
        ("device.offline", "slow_consumer"),
        ("device.online", None),
    ]
    [listed] = (await hub.presence.devices(TENANT, FleetQuery())).devices
    assert (listed["online"], listed["since"], listed["offline_reason"]) == (
        True,
        statuses[2]["ts"],
        None,
    )


async def test_people_are_members_but_go_neither_online_nor_offline(backends: Open) -> None:
    hub = await backends()
    await hub.subscribe(STATUS)
    watcher = Present("d1.1", "d1", Role.DASHBOARD, TENANT)
    screen = device("p1")
    await hub.presence.connect(watcher, [ROOM])
    await hub.presence.connect(screen, [ROOM])
    assert await hub.presence.members(ROOM) == [member(watcher, ROOM), member(screen, ROOM)]
    await hub.mark(STATUS)
    hub.presence.disconnect(watcher, Gone.CLOSED)
    hub.presence.disconnect(screen, Gone.CLOSED)
    statuses = decoded(await hub.received(STATUS, 3))
    assert [each["event"] for each in statuses] == ["device.online", MARK, "device.offline"]
    assert (await hub.fleet()) == (["p1"], None)


@also_on_a_cluster
async def test_members_are_listed_by_sub_then_conn_and_paged_from_a_place(
    backends: Open,
) -> None:
    hub = await backends()
    sockets = [device("b"), device("a", "a.2"), device("c"), device("a", "a.1")]
    sockets.append(Present("d.1", "d", Role.DASHBOARD, TENANT))
    for present in sockets:
        await hub.presence.connect(present, [DEVICES])  # seen by every node once it returns
    listed = sorted(sockets, key=lambda present: (present.sub, present.conn))
    members = [member(present, DEVICES) for present in listed]
    assert await hub.presence.members(DEVICES) == members
    assert await hub.presence.members(DEVICES, ("a", "a.2"), 2) == members[2:4]
    assert await hub.presence.members(DEVICES, None, 1) == members[:1]
    assert await hub.presence.members(DEVICES, ("d", "d.1")) == []
    assert await hub.presence.members(RoomKey(OTHER, DEVICES.room)) == []


async def test_joining_and_leaving_a_room_shows_in_its_members(backends: Open) -> None:
    hub = await backends()
    screen = device("p1")
    await hub.presence.connect(screen, [DEVICES])
    hub.presence.join(screen, ROOM)
    await hub.listed(ROOM, ["p1.1"])
    assert await hub.presence.members(ROOM) == [member(screen, ROOM)]
    hub.presence.leave(screen, ROOM)
    await hub.listed(ROOM, [])
    hub.presence.disconnect(screen, Gone.CLOSED)
    await hub.listed(DEVICES, [])


@also_on_a_cluster
async def test_a_heartbeat_is_published_to_status_and_kept_for_members_and_the_fleet(
    backends: Open,
) -> None:
    hub = await backends(max_heartbeat_bytes=256)
    await hub.subscribe(STATUS)
    screen = device("p1")
    await hub.presence.connect(screen, [DEVICES])
    hub.presence.heartbeat(screen, {"status": "playing", "cpu": 0.5})
    _, beat = decoded(await hub.received(STATUS, 2))
    data = {"status": "playing", "cpu": 0.5}
    assert (beat["event"], beat["data"]) == ("device.heartbeat", {"device": "p1", **data})
    kept = {**data, "time": beat["ts"]}
    assert await hub.presence.members(DEVICES) == [member(screen, DEVICES, kept)]
    [listed] = (await hub.presence.devices(TENANT, FleetQuery())).devices
    assert listed["heartbeat"] == kept
    assert listed["last_seen"] >= beat["ts"]
    with pytest.raises(HubError) as refused:
        hub.presence.heartbeat(screen, {"status": "x" * 300})
    assert refused.value.code is ErrorCode.TOO_LARGE


async def five_devices(hub: Backends) -> dict[str, dict[str, Any]]:
    """Connect the devices of `PLACES` and disconnect d1: each one's latest lifecycle event."""
    await hub.subscribe(STATUS)
    sockets = {sub: device(sub, None, loc, groups) for sub, (loc, groups) in PLACES.items()}
    for present in sockets.values():
        await hub.presence.connect(present, [DEVICES])
    hub.presence.disconnect(sockets["d1"], Gone.CLOSED)
    return {each["data"]["device"]: each for each in decoded(await hub.received(STATUS, 6))}


@also_on_a_cluster
async def test_the_fleet_lists_each_device_as_its_latest_lifecycle_event_says(
    backends: Open,
) -> None:
    hub = await backends()
    events = await five_devices(hub)
    page = await hub.presence.devices(TENANT, FleetQuery())
    assert ([listed["sub"] for listed in page.devices], page.next) == (list(PLACES), None)
    for listed in page.devices:
        sub, (loc, groups) = listed["sub"], PLACES[listed["sub"]]
        assert set(listed) == FIELDS
        assert (listed["loc"], listed["groups"], listed["heartbeat"]) == (loc, list(groups), None)
        assert listed["last_seen"] >= listed["since"] == events[sub]["ts"]
        online = events[sub]["event"] == "device.online"
        said = (True, NODE, None) if online else (False, None, "closed")
        assert (listed["online"], listed["node"], listed["offline_reason"]) == said
    assert (await hub.presence.devices(OTHER, FleetQuery())).devices == []


async def test_the_fleet_is_filtered_and_paged_in_sub_order(backends: Open) -> None:
    hub = await backends()
    await five_devices(hub)
    assert await hub.fleet(loc="hall") == (["d1", "d3"], None)
    assert await hub.fleet(group="b") == (["d1", "d3"], None)
    assert await hub.fleet(online=False) == (["d1"], None)
    assert await hub.fleet(online=True, loc="lobby") == (["d0", "d2"], None)
    assert await hub.fleet(limit=2) == (["d0", "d1"], "d1")
    assert await hub.fleet(limit=2, after="d1") == (["d2", "d3"], "d3")
    assert await hub.fleet(limit=2, after="d3") == (["d4"], None)
    assert await hub.fleet(limit=5) == (list(PLACES), None)
    assert await hub.fleet(limit=1, loc="hall", after="d1") == (["d3"], "d3")
    assert await hub.fleet(limit=1, loc="hall", after="d3") == ([], None)


async def test_an_offline_device_leaves_the_fleet_after_its_ttl_an_online_one_stays(
    backends: Open,
) -> None:
    hub = await backends(fleet_ttl=TTL)
    await hub.subscribe(STATUS)
    stays, goes = device("stays"), device("goes")
    await hub.presence.connect(stays, [DEVICES])
    await hub.presence.connect(goes, [DEVICES])
    hub.presence.disconnect(goes, Gone.CLOSED)
    await hub.received(STATUS, 3)
    assert await hub.fleet() == (["goes", "stays"], None)
    await asyncio.sleep(TTL + 0.05)
    assert await hub.fleet() == (["stays"], None)


async def test_stopping_presence_writes_out_what_is_pending(backends: Open) -> None:
    hub = await backends()
    screen = device("p1")
    await hub.presence.connect(screen, [DEVICES])
    hub.presence.disconnect(screen, Gone.CLOSED)
    await hub.stop_presence()
    statuses = decoded((await hub.history(STATUS)).events)
    events = [(each["event"], each["data"].get("reason")) for each in statuses]
    assert events == [("device.online", None), ("device.offline", "closed")]
