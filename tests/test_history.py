"""Room history and resume: ids, replay after `since`, epochs, and the seam under load."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import pytest

from hub import openapi
from hub.history import parse_id
from tests.conftest import NodeFactory, Redis, by_backend
from tests.support import Client, HubNode, RedisServer, eventually, token

OPERATOR = token("operator", "o1")
PUBLISHER = token("dashboard", "pub", publish=["*"])
SHORT_LIVED = '{"short:": {"ttl": 1}}'
"""`history_rooms` of the tests of ages: events in `short:` rooms are kept a second."""


def _order(event_id: str) -> tuple[int, int]:
    return parse_id(event_id) or (0, 0)


def _tick(node: HubNode, tenant: str, room: str, n: int) -> str:
    operator = token("operator", "o1", tenant)
    answer = node.broadcast(operator, room=room, event="x.tick", data={"n": n})
    assert answer.status_code == 202, answer.text
    event_id: str = answer.json()["ids"][room]
    return event_id


def _history(node: HubNode, tenant: str, room: str, **params: Any) -> dict[str, Any]:
    answer = httpx.get(
        f"{node.url}/v1/rooms/{room}/history",
        params=params,
        headers={"Authorization": f"Bearer {token('operator', 'o1', tenant)}"},
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def _ticks(client: Client, count: int) -> list[int]:
    return [(await client.next_event())["data"]["n"] for _ in range(count)]


@pytest.fixture(scope="module")
def kept_alone(module_nodes: NodeFactory) -> HubNode:
    """`node` without Redis, for all the module's tests."""
    return module_nodes("solo", history_size=5)


@pytest.fixture(scope="module")
def kept_on_redis(module_redis: RedisServer, module_nodes: NodeFactory) -> HubNode:
    """`node` with a Redis, for all the module's tests."""
    return module_nodes("with-redis", module_redis.url, history_size=5)


@pytest.fixture(params=["memory", "redis", "cluster"])
def node(request: pytest.FixtureRequest, hub_node: NodeFactory) -> HubNode:
    """A single node without Redis, a node with one, and one with a Redis Cluster, for
    behaviour all must share. The first two serve every test of the module, each in its
    own `tenant`; the cluster's is the test's own, as other tests empty the cluster."""
    return by_backend(request, hub_node, ("kept_alone", "kept_on_redis"), history_size=5)


@pytest.fixture(scope="module")
def aging_alone(module_nodes: NodeFactory) -> HubNode:
    """`aging` without Redis, for all the module's tests."""
    return module_nodes("aging", history_rooms=SHORT_LIVED)


@pytest.fixture(scope="module")
def aging_on_redis(module_redis: RedisServer, module_nodes: NodeFactory) -> HubNode:
    """`aging` with a Redis, for all the module's tests."""
    return module_nodes("aging", module_redis.url, history_rooms=SHORT_LIVED)


@pytest.fixture(params=["memory", "redis"])
def aging(request: pytest.FixtureRequest) -> HubNode:
    """A node whose `short:` rooms keep events a second, alone or with a Redis: the tests
    of ages, which all run on that setting, share it, each in its own `tenant`."""
    shared: HubNode = request.getfixturevalue(
        "aging_alone" if request.param == "memory" else "aging_on_redis"
    )
    return shared


async def test_events_carry_increasing_ids_that_acks_and_rest_report(
    node: HubNode, tenant: str
) -> None:
    listener = await Client.connect(node, token("dashboard", "d1", tenant))
    await listener.subscribe("room")
    ids = [_tick(node, tenant, "room", n) for n in range(3)]
    events = [await listener.next_event() for _ in range(3)]
    assert [event["id"] for event in events] == ids
    assert sorted(ids, key=_order) == ids
    publisher = await Client.connect(node, token("dashboard", "pub", tenant, publish=["*"]))
    ack = await publisher.request("publish", room="room", event="x.tick", data={"n": 3})
    assert ack["id"] == (await listener.next_event())["id"]
    await listener.close()
    await publisher.close()


async def test_resume_replays_what_was_missed_then_goes_live(node: HubNode, tenant: str) -> None:
    first = await Client.connect(node, token("dashboard", "d1", tenant))
    ack = await first.subscribe("room")
    assert ack["recovered"] is False
    _tick(node, tenant, "room", 0)
    seen = await first.next_event()
    await first.close()
    _tick(node, tenant, "room", 1)
    _tick(node, tenant, "room", 2)

    again = await Client.connect(node, token("dashboard", "d1", tenant))
    resumed = await again.request("subscribe", room="room", since=seen["id"], epoch=ack["epoch"])
    assert resumed["type"] == "ack"
    assert resumed["recovered"] is True
    assert resumed["epoch"] == ack["epoch"]
    _tick(node, tenant, "room", 3)
    assert await _ticks(again, 1) == [3]
    await again.close()


async def test_a_room_first_seen_empty_resumes_from_nothing_seen(
    node: HubNode, tenant: str
) -> None:
    """A client that saw no event resumes with `0-0`, and gets what was published while it
    was away, recovered, whether or not the room had history in between."""
    first = await Client.connect(node, token("dashboard", "d1", tenant))
    ack = await first.subscribe("quiet")
    await first.close()
    again = await Client.connect(node, token("dashboard", "d1", tenant))
    assert (await again.subscribe("quiet", since="0-0", epoch=ack["epoch"]))["recovered"]
    await again.close()
    _tick(node, tenant, "quiet", 0)
    last = await Client.connect(node, token("dashboard", "d1", tenant))
    await last.send({"op": "subscribe", "room": "quiet", "since": "0-0", "epoch": ack["epoch"]})
    assert (await last.recv())["data"] == {"n": 0}
    resumed = await last.recv()
    assert (resumed["type"], resumed["recovered"]) == ("ack", True)
    await last.close()


async def test_replayed_events_come_before_the_ack(node: HubNode, tenant: str) -> None:
    first_id = _tick(node, tenant, "room", 0)
    _tick(node, tenant, "room", 1)
    client = await Client.connect(node, token("dashboard", "d1", tenant))
    epoch = _history(node, tenant, "room")["epoch"]
    await client.send({"op": "subscribe", "room": "room", "since": first_id, "epoch": epoch})
    replayed = await client.recv()
    assert (replayed["type"], replayed["data"]) == ("event", {"n": 1})
    ack = await client.recv()
    assert (ack["type"], ack["recovered"], ack["last"]) == ("ack", True, replayed["id"])
    await client.close()


async def test_since_older_than_retention_is_not_recovered(node: HubNode, tenant: str) -> None:
    first_id = _tick(node, tenant, "room", 0)
    for n in range(1, 8):
        _tick(node, tenant, "room", n)
    epoch = _history(node, tenant, "room")["epoch"]
    client = await Client.connect(node, token("dashboard", "d1", tenant))
    await client.send({"op": "subscribe", "room": "room", "since": first_id, "epoch": epoch})
    assert await _ticks(client, 5) == [3, 4, 5, 6, 7]
    ack = await client.recv()
    assert ack["type"] == "ack"
    assert ack["recovered"] is False
    await client.close()


async def test_events_past_their_age_are_dropped_and_not_recovered(
    aging: HubNode, tenant: str
) -> None:
    first_id = _tick(aging, tenant, "short:room", 0)
    _tick(aging, tenant, "short:room", 1)
    epoch = _history(aging, tenant, "short:room")["epoch"]
    await asyncio.sleep(0.7)
    _tick(aging, tenant, "short:room", 2)
    await asyncio.sleep(0.7)
    _tick(aging, tenant, "short:room", 3)  # 0 and 1 are now over a second old
    history = _history(aging, tenant, "short:room")
    assert [event["data"]["n"] for event in history["events"]] == [2, 3]
    assert history["epoch"] == epoch
    client = await Client.connect(aging, token("dashboard", "d1", tenant))
    ack = await client.subscribe("short:room", since=first_id, epoch=epoch)
    assert ack["recovered"] is False  # event 1 came after `since` and is gone
    await client.close()


async def test_a_room_idle_past_its_age_is_not_recovered_and_starts_afresh(
    aging: HubNode, tenant: str
) -> None:
    """Once every event has aged out the room's history is gone whole; a resume from
    before that is told events may be missing, and the room's ids go on increasing."""
    first_id = _tick(aging, tenant, "short:room", 0)
    second_id = _tick(aging, tenant, "short:room", 1)
    epoch = _history(aging, tenant, "short:room")["epoch"]
    await asyncio.sleep(1.3)
    gone = _history(aging, tenant, "short:room", since=first_id)
    assert (gone["events"], gone["last"]) == ([], None)
    client = await Client.connect(aging, token("dashboard", "d1", tenant))
    ack = await client.subscribe("short:room", since=first_id, epoch=epoch)
    assert ack["recovered"] is False  # event 1 came after `since` and aged out
    assert _order(_tick(aging, tenant, "short:room", 2)) > _order(second_id)
    await client.close()


async def test_publishes_sent_without_waiting_keep_their_order(node: HubNode, tenant: str) -> None:
    """More publishes in flight than one socket may have (64): acked in order, published
    in order, with increasing ids."""
    watcher = await Client.connect(node, token("dashboard", "w", tenant))
    await watcher.subscribe("burst")
    publisher = await Client.connect(node, token("dashboard", "pub", tenant, publish=["*"]))
    count = 90
    for n in range(count):
        frame = {"op": "publish", "room": "burst", "event": "x.tick", "data": {"n": n}, "ref": n}
        await publisher.send(frame)
    acks = [await publisher.recv() for _ in range(count)]
    assert [(ack["type"], ack["ref"]) for ack in acks] == [("ack", n) for n in range(count)]
    events = [await watcher.next_event() for _ in range(count)]
    assert [event["data"]["n"] for event in events] == list(range(count))
    assert [event["id"] for event in events] == [ack["id"] for ack in acks]
    assert sorted(acks, key=lambda ack: _order(ack["id"])) == acks
    await publisher.close()
    await watcher.close()


async def test_another_epoch_is_not_recovered(node: HubNode, tenant: str) -> None:
    first_id = _tick(node, tenant, "room", 0)
    client = await Client.connect(node, token("dashboard", "d1", tenant))
    ack = await client.subscribe("room", since=first_id, epoch="not-this-one")
    assert ack["recovered"] is False
    await client.close()


async def test_history_endpoint_pages_after_since(node: HubNode, tenant: str) -> None:
    ids = [_tick(node, tenant, "room", n) for n in range(4)]
    page = _history(node, tenant, "room", since=ids[0], limit=2)
    assert page["room"] == "room"
    assert [event["data"]["n"] for event in page["events"]] == [1, 2]
    assert page["last"] == ids[-1]
    assert page["events"][0]["type"] == "event"
    assert page["events"][0]["id"] == ids[1]


def test_history_endpoint_refuses_devices_and_bad_input(refusing: HubNode) -> None:
    url = f"{refusing.url}/v1/rooms/room/history"
    device = {"Authorization": f"Bearer {token('device', 'p1')}"}
    operator = {"Authorization": f"Bearer {OPERATOR}"}
    assert httpx.get(url, headers=device).status_code == 403
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, params={"since": "yesterday"}, headers=operator).status_code == 400
    assert httpx.get(url, params={"limit": "0"}, headers=operator).status_code == 400


async def test_no_history_means_no_ids(hub_node: NodeFactory) -> None:
    node = hub_node("forgetful", history_size=0)
    client = await Client.connect(node, token("device", "p1"))
    answer = node.broadcast(OPERATOR, room="devices", event="x.tick", data={"n": 0})
    assert answer.json()["ids"] == {"devices": None}
    assert "id" not in await client.next_event()
    await client.close()


async def test_retention_per_room_prefix(hub_node: NodeFactory, tenant: str) -> None:
    node = hub_node("prefixed", history_rooms='{"brief:": {"size": 2}}')
    for n in range(4):
        _tick(node, tenant, "brief:room", n)
        _tick(node, tenant, "long:room", n)
    assert len(_history(node, tenant, "brief:room")["events"]) == 2
    assert len(_history(node, tenant, "long:room")["events"]) == 4


async def test_redis_losing_its_data_changes_the_epoch(
    hub_node: NodeFactory, redis_server: RedisServer, tenant: str
) -> None:
    node = hub_node("a", redis_server.url)
    first_id = _tick(node, tenant, "room", 0)
    epoch = _history(node, tenant, "room")["epoch"]
    redis_server.stop()
    redis_server.start()
    await eventually(node.ready, 20, "the node to reconnect")
    client = await Client.connect(node, token("dashboard", "d1", tenant))
    ack = await client.subscribe("room", since=first_id, epoch=epoch)
    assert ack["recovered"] is False
    assert ack["epoch"] != epoch
    await client.close()


async def test_resume_has_no_gap_and_no_repeat_while_both_nodes_publish(
    hub_node: NodeFactory, redis: Redis
) -> None:
    a = hub_node("a", redis.url, client_rate=0, **redis.settings)
    b = hub_node("b", redis.url, client_rate=0, **redis.settings)
    publishers = [await Client.connect(node, PUBLISHER) for node in (a, b)]
    total = 300

    async def publish(client: Client, origin: int) -> None:
        for n in range(total):
            await client.send(
                {"op": "publish", "room": "busy", "event": "x.tick", "data": {"o": origin, "n": n}}
            )
        for _ in range(total):
            assert (await client.recv())["type"] == "ack"

    watchers = [
        await Client.connect(node, token("dashboard", f"w{i}")) for i, node in enumerate((a, b))
    ]
    for watcher in watchers:
        await watcher.subscribe("busy")
    tasks = [asyncio.create_task(publish(client, i)) for i, client in enumerate(publishers)]
    early = await watchers[0].next_event()
    # A late subscriber resumes from the first event while both publishers are running.
    late = await Client.connect(b, token("dashboard", "late"))
    await late.send({"op": "subscribe", "room": "busy", "since": early["id"]})
    await asyncio.gather(*tasks)

    async def ids(client: Client, count: int) -> list[str]:
        got: list[str] = []
        while len(got) < count:
            frame = await client.recv(10)
            if frame.get("type") == "event":
                got.append(frame["id"])
        return got

    full = [early["id"], *await ids(watchers[0], 2 * total - 1)]
    assert await ids(watchers[1], 2 * total) == full
    assert await ids(late, 2 * total - 1) == full[1:]
    assert sorted(full, key=_order) == full
    for client in (*publishers, *watchers, late):
        await client.close()


async def test_a_device_resumes_its_own_rooms_by_subscribing_to_them(
    node: HubNode, tenant: str
) -> None:
    device = await Client.connect(node, token("device", "p1", tenant))
    ack = await device.subscribe("device:p1")
    _tick(node, tenant, "device:p1", 0)
    seen = await device.next_event()
    await device.close()
    _tick(node, tenant, "device:p1", 1)

    again = await Client.connect(node, token("device", "p1", tenant))
    assert "device:p1" in again.welcome["rooms"]
    await again.send(
        {"op": "subscribe", "room": "device:p1", "since": seen["id"], "epoch": ack["epoch"]}
    )
    assert (await again.recv())["data"] == {"n": 1}
    resumed = await again.recv()
    assert (resumed["type"], resumed["recovered"]) == ("ack", True)
    _tick(node, tenant, "device:p1", 2)
    assert await _ticks(again, 1) == [2]
    await again.close()


@pytest.mark.parametrize(
    ("part", "valid"),
    [
        ("0", True),
        ("9999999999999999999", True),
        ("10000000000000000000", True),
        ("18446744073709551615", True),
        ("01844674407370955161", True),
        ("18446744073709551616", False),
        ("18446744073709551620", False),
        ("18446744073709552000", False),
        ("56758615677624960194", False),
        ("184467440737095516150", False),
    ],
)
def test_the_documented_id_pattern_takes_exactly_the_ids_the_hub_takes(
    part: str, valid: bool
) -> None:
    """A Redis stream id is two u64s: the API document says so as the check does, or a
    client that follows the document gets a 400."""
    pattern = openapi.document()["components"]["schemas"]["EventId"]["pattern"]
    for text in (f"{part}-1", f"1-{part}"):
        assert (re.fullmatch(pattern, text) is not None) is valid
        assert (parse_id(text) is not None) is valid
