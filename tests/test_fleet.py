"""The fleet (`GET /v1/devices`): every device seen within `HUB_FLEET_TTL`, online or not,
agreeing with the `device.online` / `device.offline` events, on one node and across nodes,
through churn and a node's death; forgotten devices leave nothing behind in Redis."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import pytest
from redis.asyncio import Redis

from hub.assembly import assemble
from hub.auth import Role
from hub.config import Settings
from hub.disconnect import Gone
from hub.fleet import FleetQuery
from hub.metrics import Metrics
from hub.presence import Present
from hub.presence.memory import MemoryFleet
from hub.presence.registry import fleet_keep
from hub.presence.scripts import FLEET_PAGE
from tests.conftest import NodeFactory
from tests.support import SECRET, Client, HubNode, RedisServer, eventually, token

OPERATOR = token("operator", "o1")
DEVICES = 200
FAST = {"heartbeat_interval": 10.0, "heartbeat_timeout": 30.0, "node_ttl": 3.0}
"""Devices that stay online through the test without heartbeats; a dead node reaped fast."""


def _nodes(
    request: pytest.FixtureRequest, hub_node: NodeFactory, **settings: Any
) -> tuple[HubNode, HubNode]:
    """Where devices connect and where the fleet is read: one node, or two through Redis."""
    if request.param == "one node":
        node = hub_node("solo", **settings)
        return node, node
    redis: RedisServer = request.getfixturevalue("redis_server")
    return hub_node("a", redis.url, **settings), hub_node("b", redis.url, **settings)


@pytest.fixture(params=["one node", "two nodes"])
def nodes(request: pytest.FixtureRequest, hub_node: NodeFactory) -> tuple[HubNode, HubNode]:
    return _nodes(request, hub_node)


@pytest.fixture(params=["one node", "two nodes"])
def brief_nodes(request: pytest.FixtureRequest, hub_node: NodeFactory) -> tuple[HubNode, HubNode]:
    """Nodes whose fleet forgets an offline device a second after it was last seen."""
    return _nodes(request, hub_node, fleet_ttl=1)


def _page(node: HubNode, bearer: str = OPERATOR, **params: str) -> dict[str, Any]:
    answer = node.get("/v1/devices", bearer, **params)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    assert set(body) == {"devices", "next"}
    return body


def _fleet(node: HubNode, **params: str) -> list[dict[str, Any]]:
    """Every device of the fleet, page after page."""
    devices: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        body = _page(node, **params, **({} if after is None else {"after": after}))
        devices += body["devices"]
        after = body["next"]
        if after is None:
            return devices


def _by_sub(devices: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {device["sub"]: device for device in devices}


FIELDS = {
    "sub",
    "online",
    "loc",
    "groups",
    "node",
    "since",
    "last_seen",
    "heartbeat",
    "offline_reason",
}


async def test_a_device_is_listed_online_then_offline_with_its_reason_and_last_heartbeat(
    nodes: tuple[HubNode, HubNode],
) -> None:
    device_node, reader = nodes
    dashboard = await Client.watching_status(reader)
    assert _page(reader) == {"devices": [], "next": None}
    device = await Client.connect(device_node, token("device", "p1", loc="lobby", groups=["g"]))
    online = await dashboard.next_event()
    assert online["event"] == "device.online"

    # Written in the step that publishes the event: no wait once the event is seen.
    [listed] = _page(reader)["devices"]
    assert set(listed) == FIELDS
    assert listed["sub"] == "p1"
    assert listed["online"] is True
    assert (listed["loc"], listed["groups"]) == ("lobby", ["g"])
    assert listed["node"] == device_node.name
    assert listed["since"] == online["ts"]
    assert listed["last_seen"] >= listed["since"] - 1000  # Redis's clock, this machine's
    assert listed["heartbeat"] is None
    assert listed["offline_reason"] is None

    await device.send({"op": "heartbeat", "data": {"status": "playing", "cpu": 3.5}})
    beat = await dashboard.next_event()
    assert beat["event"] == "device.heartbeat"
    [listed] = _page(reader)["devices"]
    heartbeat = listed["heartbeat"]
    assert {key: heartbeat[key] for key in ("status", "cpu")} == {"status": "playing", "cpu": 3.5}
    assert heartbeat["time"] >= online["ts"]
    assert listed["last_seen"] >= heartbeat["time"] - 1000

    await device.close()
    offline = await dashboard.next_event()
    assert offline["event"] == "device.offline"
    [listed] = _page(reader)["devices"]
    assert listed["online"] is False
    assert listed["node"] is None
    assert listed["offline_reason"] == "closed"
    assert listed["since"] == listed["last_seen"] == offline["ts"]
    assert listed["heartbeat"] == heartbeat  # the last one is kept
    assert (listed["loc"], listed["groups"]) == ("lobby", ["g"])
    await dashboard.close()


async def test_filters_and_pages_in_sub_order(nodes: tuple[HubNode, HubNode]) -> None:
    device_node, reader = nodes
    claims: dict[str, dict[str, Any]] = {
        "d1": {"loc": "lobby", "groups": ["a", "b"]},
        "d2": {"loc": "lobby"},
        "d3": {"loc": "hall", "groups": ["b"]},
        "d4": {"groups": ["a"]},
        "d5": {"loc": "hall"},
        "d6": {"loc": "lobby", "groups": ["a"]},
    }
    clients = {
        sub: await Client.connect(device_node, token("device", sub, **claims[sub]))
        for sub in claims
    }
    await eventually(lambda: len(_fleet(reader)) == len(claims), 5, "every device listed")
    for sub in ("d2", "d3"):
        await clients.pop(sub).close()

    def offline() -> bool:
        return {d["sub"] for d in _page(reader, online="false")["devices"]} == {"d2", "d3"}

    await eventually(offline, 5, "d2 and d3 to go offline")

    def subs(**params: str) -> list[str]:
        return [device["sub"] for device in _fleet(reader, **params)]

    assert subs() == ["d1", "d2", "d3", "d4", "d5", "d6"]
    assert subs(loc="lobby") == ["d1", "d2", "d6"]
    assert subs(group="a") == ["d1", "d4", "d6"]
    assert subs(online="true") == ["d1", "d4", "d5", "d6"]
    assert subs(loc="lobby", group="a", online="true") == ["d1", "d6"]
    assert subs(loc="hall", online="false") == ["d3"]
    assert subs(loc="nowhere") == []
    assert _by_sub(_fleet(reader))["d4"]["loc"] is None
    assert _by_sub(_fleet(reader))["d2"]["groups"] == []

    first = _page(reader, limit="4")
    assert [d["sub"] for d in first["devices"]] == ["d1", "d2", "d3", "d4"]
    assert first["next"] == "d4"
    second = _page(reader, limit="4", after="d4")
    assert [d["sub"] for d in second["devices"]] == ["d5", "d6"]
    assert second["next"] is None
    exact = _page(reader, limit="2", after="d4")  # fills the page at the very end
    assert [d["sub"] for d in exact["devices"]] == ["d5", "d6"]
    assert exact["next"] is None
    between = _page(reader, after="d3x", loc="lobby")  # any sub, listed or not
    assert [d["sub"] for d in between["devices"]] == ["d6"]
    filtered = _page(reader, limit="1", group="b")
    assert ([d["sub"] for d in filtered["devices"]], filtered["next"]) == (["d1"], "d1")
    assert subs(limit="1") == subs()
    for client in clients.values():
        await client.close()


async def test_an_offline_device_is_forgotten_after_the_fleet_ttl_an_online_one_never(
    brief_nodes: tuple[HubNode, HubNode],
) -> None:
    device_node, reader = brief_nodes
    stays = await Client.connect(device_node, token("device", "stays"))
    gone = await Client.connect(device_node, token("device", "gone"))
    await eventually(lambda: len(_fleet(reader)) == 2, 5, "both listed")
    await gone.close()
    await eventually(
        lambda: [d["sub"] for d in _fleet(reader, online="false")] == ["gone"], 5, "gone offline"
    )
    await eventually(lambda: [d["sub"] for d in _fleet(reader)] == ["stays"], 5, "gone forgotten")
    await asyncio.sleep(0.5)  # stays is now well past the TTL, and online
    await Client.connect(device_node, token("device", "later"))  # forgets a few old ones
    assert [(d["sub"], d["online"]) for d in _fleet(reader)] == [
        ("later", True),
        ("stays", True),
    ]
    await stays.close()


def _last_is(events: list[dict[str, Any]], name: str) -> bool:
    return bool(events) and events[-1]["event"] == name


async def test_a_forgotten_device_leaves_no_entry_in_redis_and_every_key_expires(
    hub_node: NodeFactory, redis_server: RedisServer
) -> None:
    node = hub_node("a", redis_server.url, fleet_ttl=1)
    dashboard = await Client.watching_status(node)
    old = await Client.connect(node, token("device", "old"))
    await dashboard.events(lambda seen: _last_is(seen, "device.online"), timeout=5)
    await old.send({"op": "heartbeat", "data": {"status": "playing"}})
    await dashboard.events(lambda seen: _last_is(seen, "device.heartbeat"), timeout=5)
    await old.close()
    await dashboard.events(lambda seen: _last_is(seen, "device.offline"), timeout=5)
    keys = [f"hub:{kind}:{{acme}}" for kind in ("fd", "fs", "fx", "hb")]

    def entries(sub: str) -> list[str]:
        fd, fs, fx, hb = keys
        return [
            redis_server.command("HEXISTS", fd, sub).strip(),
            redis_server.command("ZSCORE", fs, sub).strip(),
            redis_server.command("ZSCORE", fx, sub).strip(),
            redis_server.command("HEXISTS", hb, sub).strip(),
        ]

    assert entries("old")[0] == entries("old")[3] == "1"
    await asyncio.sleep(1.2)
    new = await Client.connect(node, token("device", "new"))
    assert entries("old") == ["0", "", "", "0"]
    assert [d["sub"] for d in _fleet(node)] == ["new"]
    keep_ms = fleet_keep(Settings(jwt_secret=SECRET, redis_url=redis_server.url, fleet_ttl=1))
    keep_ms *= 1000
    for key in keys[:3]:
        assert 0 < int(redis_server.command("PTTL", key)) <= keep_ms
    assert redis_server.command("EXISTS", keys[3]).strip() == "0"  # emptied: nothing beat
    await new.close()
    await dashboard.close()


async def test_the_fleet_is_for_people_of_the_tenant_and_checks_its_parameters(
    single: HubNode,
) -> None:
    device = await Client.connect(single, token("device", "p1", loc="lobby"))
    assert single.get("/v1/devices").status_code == 401
    assert single.get("/v1/devices", token("device", "p2")).status_code == 403
    assert [d["sub"] for d in _fleet(single, bearer=token("dashboard", "d1"))] == ["p1"]
    assert _fleet(single, bearer=token("operator", "g", tenant="globex")) == []
    assert single.get("/v1/devices", OPERATOR, tenant="globex").status_code == 403
    admin = token("admin", "root", tenant=None)
    assert single.get("/v1/devices", admin).status_code == 400
    assert [d["sub"] for d in _fleet(single, bearer=admin, tenant="acme")] == ["p1"]
    for params in (
        {"online": "yes"},
        {"online": ""},
        {"after": "p\x01"},
        {"after": "x" * 257},
        {"loc": ""},
        {"group": "g\x7f"},
        {"limit": "0"},
        {"limit": "1001"},
        {"limit": "ten"},
    ):
        answer = single.get("/v1/devices", OPERATOR, **params)
        assert answer.status_code == 400, (params, answer.text)
        assert answer.json()["error"]["code"] == "bad_request"
    await device.close()


async def test_a_drained_device_stays_online_through_its_handover_window(
    hub_node: NodeFactory, redis_server: RedisServer
) -> None:
    settings = {"drain_seconds": 0.2, "handover_seconds": 2, "node_ttl": 3}
    a = hub_node("a", redis_server.url, **settings)
    b = hub_node("b", redis_server.url, **settings)
    dashboard = await Client.watching_status(b)
    mover = await Client.connect(a, token("device", "mover"))
    straggler = await Client.connect(a, token("device", "straggler"))
    events = await dashboard.events(lambda seen: len(seen) >= 2, timeout=5)
    a.signal(signal.SIGTERM)
    assert await mover.closed_with() == 1012
    moved = await Client.connect(b, token("device", "mover"))
    assert await straggler.closed_with() == 1012
    assert await asyncio.to_thread(a.exit_code) == 0
    # Within the window neither has had an offline event: both are online, where they were.
    assert [(d["sub"], d["online"], d["node"]) for d in _fleet(b)] == [
        ("mover", True, "a"),
        ("straggler", True, "a"),
    ]

    events += await dashboard.events(lambda seen: _last_is(seen, "device.offline"), timeout=10)
    last = _lifecycle(events)
    fleet = _by_sub(_fleet(b))
    for sub in ("mover", "straggler"):
        _agrees(fleet[sub], last[sub])
    assert fleet["mover"]["online"] is True
    assert fleet["straggler"]["offline_reason"] == "node_restart"
    await moved.close()
    await dashboard.close()


async def _connect_all(node: HubNode, subs: list[str]) -> dict[str, Client]:
    clients = await asyncio.gather(*(Client.connect(node, token("device", s)) for s in subs))
    return dict(zip(subs, clients, strict=True))


async def _churn(subs: list[str], *nodes: tuple[HubNode, dict[str, Client]]) -> None:
    """A tenth of the devices leave; a tenth leave, then come back on the other node; a
    tenth come back on the other node before they leave (never offline)."""
    (a, on_a), (b, on_b) = nodes
    for n, sub in enumerate(subs):
        here, there, node = (on_a, on_b, b) if sub in on_a else (on_b, on_a, a)
        if n % 10 == 1:
            await here.pop(sub).close()
        elif n % 10 == 2:
            await here.pop(sub).close()
            there[sub] = await Client.connect(node, token("device", sub))
        elif n % 10 == 3:
            there[sub] = await Client.connect(node, token("device", sub))
            await here.pop(sub).close()


def _agrees(device: dict[str, Any], event: dict[str, Any]) -> None:
    """The device as listed is what its last lifecycle `event` says."""
    sub = device["sub"]
    assert device["online"] is (event["event"] == "device.online"), sub
    assert device["since"] == event["ts"], sub
    if device["online"]:
        assert device["node"] == event["data"]["node"], sub
        assert device["offline_reason"] is None, sub
    else:
        assert device["node"] is None, sub
        assert device["offline_reason"] == event["data"]["reason"], sub


def _lifecycle(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each device's last `device.online` or `device.offline` event."""
    last: dict[str, dict[str, Any]] = {}
    for event in events:
        if event["event"] in ("device.online", "device.offline"):
            last[event["data"]["device"]] = event
    return last


async def test_the_fleet_agrees_with_the_events_through_churn_and_a_killed_node(
    hub_node: NodeFactory, redis_server: RedisServer
) -> None:
    a = hub_node("a", redis_server.url, **FAST)
    b = hub_node("b", redis_server.url, **FAST)
    dashboard = await Client.watching_status(b)
    subs = [f"p{n:03}" for n in range(DEVICES)]
    on_a = await _connect_all(a, subs[0::2])
    on_b = await _connect_all(b, subs[1::2])
    events = await dashboard.events(lambda seen: len(seen) >= DEVICES, timeout=30)

    await _churn(subs, (a, on_a), (b, on_b))
    sockets = len(on_a) + len(on_b)
    await eventually(
        lambda: len(b.presence("devices", OPERATOR)) == sockets, 10, "presence to settle"
    )

    a.stop(signal.SIGKILL)
    for client in on_a.values():
        client.cut()
    lost = set(on_a)

    def reaped(seen: list[dict[str, Any]]) -> bool:
        last = _lifecycle(events + seen)
        return all(last[sub]["event"] == "device.offline" for sub in lost)

    events += await dashboard.events(reaped, timeout=30)
    events += await dashboard.drain(within=1.0)
    last = _lifecycle(events)
    fleet = _by_sub(_fleet(b))
    assert set(fleet) == set(subs) == set(last)
    for sub, device in fleet.items():
        _agrees(device, last[sub])
    for sub in lost:
        assert (fleet[sub]["offline_reason"], fleet[sub]["node"]) == ("node_lost", None)
    assert {sub for sub, d in fleet.items() if d["online"]} == set(on_b)
    assert sum(1 for d in fleet.values() if d["offline_reason"] == "closed") == DEVICES // 10
    for client in on_b.values():
        await client.close()
    await dashboard.close()


def _present(sub: str, loc: str | None = None, *groups: str) -> Present:
    return Present(f"c-{sub}", sub, Role.DEVICE, "acme", loc, groups)


def _listed(fleet: MemoryFleet, now: int, **query: Any) -> list[str]:
    return [device["sub"] for device in fleet.page("acme", FleetQuery(**query), now).devices]


def test_memory_fleet_forgets_offline_devices_past_the_ttl_and_keeps_online_ones() -> None:
    fleet = MemoryFleet(ttl_ms=1000)
    stays, gone = _present("stays"), _present("gone", "lobby", "g")
    fleet.online(stays, "n", since=0)
    fleet.online(gone, "n", since=10)
    fleet.beat(gone, {"status": "playing", "time": 20})
    fleet.offline(gone, Gone.HEARTBEAT_TIMEOUT, since=30)
    assert _listed(fleet, now=1030) == ["gone", "stays"]
    assert _listed(fleet, now=1031) == ["stays"]  # skipped by reads at once
    assert fleet.heartbeat("acme", "gone") == {"status": "playing", "time": 20}
    fleet.online(_present("later"), "n", since=2000)
    assert fleet.heartbeat("acme", "gone") is None  # forgotten, every bit of it
    assert _listed(fleet, now=2000) == ["later", "stays"]
    [stays_listed] = fleet.page("acme", FleetQuery(after="later"), now=2000).devices
    assert stays_listed["last_seen"] == 2000  # online past the TTL: seen again, not forgotten
    assert fleet.page("globex", FleetQuery(), now=2000).devices == []


def test_memory_fleet_page_stops_after_its_scan_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("hub.presence.memory.SCAN_BUDGET", 3)
    fleet = MemoryFleet(ttl_ms=1000)
    for n in range(5):
        fleet.online(_present(f"d{n}", "hall" if n == 4 else "lobby"), "n", since=0)
    page = fleet.page("acme", FleetQuery(loc="hall"), now=0)
    assert (page.devices, page.next) == ([], "d2")
    page = fleet.page("acme", FleetQuery(loc="hall", after="d2"), now=0)
    assert ([d["sub"] for d in page.devices], page.next) == (["d4"], None)


async def test_redis_fleet_page_stops_after_its_scan_budget_and_skips_the_forgotten(
    redis_server: RedisServer,
) -> None:
    redis = Redis.from_url(redis_server.url)
    page = redis.register_script(FLEET_PAGE)
    try:
        seconds, micros = await redis.time()
        now = seconds * 1000 + micros // 1000
        for n in range(5):  # d1 offline, last seen 5 s ago; d4 in the hall
            loc, online = "hall" if n == 4 else "lobby", "false" if n == 1 else "true"
            record = f'{{"loc":"{loc}","groups":[],"online":{online},"node":null,"since":0}}'
            await redis.hset("hub:fd:{acme}", f"d{n}", record)
            await redis.zadd("hub:fx:{acme}", {f"d{n}": 0})
            await redis.zadd("hub:fs:{acme}", {f"d{n}": now - 5000 if n == 1 else now})
        # tenant, after, limit, budget, ttl, loc, group, online
        reply = await page(args=["acme", "", 10, 3, 1000, "hall", "", ""])
        assert reply == [b"d2"]
        reply = await page(args=["acme", "d2", 10, 3, 1000, "hall", "", ""])
        assert reply[0] is None
        assert reply[1:3] == [b"d4", await redis.hget("hub:fd:{acme}", "d4")]
        assert reply[3] is None  # no heartbeat
        listed = await page(args=["acme", "", 10, 100, 1000, "", "", ""])
        assert listed[1::4] == [b"d0", b"d2", b"d3", b"d4"]  # d1 offline and past the TTL
        listed = await page(args=["acme", "", 10, 100, 10_000, "", "", "false"])
        assert listed[1::4] == [b"d1"]
    finally:
        await redis.aclose()


async def test_a_node_is_not_ready_before_its_presence_is_registered(
    redis_server: RedisServer,
) -> None:
    """Until the first registration heartbeats are not written: /readyz waits for it
    (`Presence.ready`), so a load balancer sends no socket before."""
    settings = Settings(jwt_secret=SECRET, redis_url=redis_server.url, node_id="early")
    parts = assemble(settings, Metrics())
    assert parts.presence.ready is False
    await parts.start()
    try:
        await eventually(lambda: parts.presence.ready, 5, "the first registration")
        assert parts.node.broker.available
    finally:
        await parts.stop()
