"""Device lifecycle events and the presence endpoint, on one node and across two."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from tests.conftest import NodeFactory, Redis, pair_on
from tests.support import Client, HubNode, eventually, metric, token


@pytest.fixture(params=["redis", "cluster"])
def through_redis(request: pytest.FixtureRequest, hub_node: NodeFactory) -> HubNode:
    """One node through Redis: the shared pair's first on one redis-server, the test's
    own on the cluster (its peer would be started for nothing)."""
    if request.param == "redis":
        node: HubNode = request.getfixturevalue("shared_pair")[0]
        return node
    cluster: Redis = request.getfixturevalue("redis_cluster")
    return hub_node("a", cluster.url, **cluster.settings)


@pytest.fixture(params=["one node", "two nodes", "two nodes on a cluster"])
def nodes(request: pytest.FixtureRequest, hub_node: NodeFactory) -> tuple[HubNode, HubNode]:
    """Where the device and where the dashboard connect: the same node, or two through
    Redis (one server, or a Redis Cluster); the first two shared by the module's tests,
    each in its own `tenant`."""
    if request.param == "one node":
        node: HubNode = request.getfixturevalue("shared_single")
        return node, node
    if request.param == "two nodes":
        shared: tuple[HubNode, HubNode] = request.getfixturevalue("shared_pair")
        return shared
    return pair_on(hub_node, request.getfixturevalue("redis_cluster"))


def _lifecycle(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [
        (event["event"], event["data"]["device"])
        for event in events
        if event["event"] in ("device.online", "device.offline")
    ]


async def test_online_heartbeat_and_offline_reach_the_status_room_and_presence(
    nodes: tuple[HubNode, HubNode], tenant: str
) -> None:
    device_node, dashboard_node = nodes
    operator = token("operator", "o1", tenant)
    dashboard = await Client.watching_status(dashboard_node, tenant)
    device = await Client.connect(device_node, token("device", "p1", tenant, loc="lobby"))

    online = await dashboard.next_event()
    assert (online["room"], online["event"]) == ("status", "device.online")
    assert online["data"] == {"device": "p1", "node": device_node.name, "loc": "lobby"}

    await device.send({"op": "heartbeat", "data": {"status": "playing", "cpu": 12.5}})
    beat = await dashboard.next_event()
    assert beat["event"] == "device.heartbeat"
    assert beat["data"] == {"device": "p1", "status": "playing", "cpu": 12.5}

    def recorded() -> bool:
        members = dashboard_node.presence("location:lobby", operator)
        return len(members) == 1 and members[0]["heartbeat"] is not None

    await eventually(recorded, 5, "the heartbeat to show in presence")
    [member] = dashboard_node.presence("location:lobby", operator)
    assert member["sub"] == "p1"
    assert member["role"] == "device"
    assert member["node"] == device_node.name
    assert member["conn"] == device.welcome["conn"]
    assert isinstance(member["since"], int)
    heartbeat = member["heartbeat"]
    assert {key: heartbeat[key] for key in ("status", "cpu")} == {"status": "playing", "cpu": 12.5}
    assert heartbeat["time"] >= member["since"]

    await device.close()
    offline = await dashboard.next_event()
    assert offline["event"] == "device.offline"
    assert offline["data"] == {"device": "p1", "node": device_node.name, "reason": "closed"}
    await eventually(
        lambda: not dashboard_node.presence("devices", operator), 5, "presence to empty"
    )
    await dashboard.close()


async def test_a_batch_of_heartbeats_alone_is_one_round_trip_and_a_connect_two(
    through_redis: HubNode, tenant: str
) -> None:
    """A batch that may add a socket first tells the registry its tenants (`ENROL`); one
    of heartbeats alone only writes for sockets Redis holds, and goes straight out. On a
    shared node the counters are read as differences, from when this test's connect has
    gone out: what other tests left queued went out no later (the queue is flushed whole)."""
    node = through_redis
    dashboard = await Client.watching_status(node, tenant)
    device = await Client.connect(node, token("device", "p1", tenant))
    await dashboard.next_event()  # online: the connect's batch has gone out

    def sent() -> tuple[float, float]:
        writes = metric(node, "hub_presence_writes_total")
        return writes, metric(node, "hub_presence_round_trips_total")

    async def written(count: float) -> None:
        await eventually(lambda: sent()[0] == count, 5, f"{count} presence writes")

    writes, trips = sent()
    for n in range(3):  # each in a batch of its own (batches are 50 ms)
        await device.send({"op": "heartbeat", "data": {"status": "ok", "n": n}})
        assert (await dashboard.next_event())["data"]["n"] == n
        await written(writes + n + 1)
    assert sent() == (writes + 3, trips + 3)
    await device.close()
    await dashboard.next_event()  # offline
    await written(writes + 4)
    assert sent()[1] == trips + 5
    await dashboard.close()


async def test_a_device_with_a_socket_on_each_node_stays_online_until_the_last_goes(
    nodes: tuple[HubNode, HubNode], tenant: str
) -> None:
    first_node, second_node = nodes
    dashboard = await Client.watching_status(second_node, tenant)
    first = await Client.connect(first_node, token("device", "p1", tenant))
    assert _lifecycle([await dashboard.next_event()]) == [("device.online", "p1")]
    second = await Client.connect(second_node, token("device", "p1", tenant))
    await first.close()

    def only_the_second() -> bool:
        members = first_node.presence("device:p1", token("operator", "o1", tenant))
        return [member["conn"] for member in members] == [second.welcome["conn"]]

    await eventually(only_the_second, 5, "presence to keep only the second socket")
    await dashboard.no_event(within=1.0)
    await second.close()
    assert _lifecycle([await dashboard.next_event()]) == [("device.offline", "p1")]
    await dashboard.close()


async def test_presence_lists_dashboards_and_devices_of_a_room_on_every_node(
    tenant_pair: tuple[HubNode, HubNode], tenant: str
) -> None:
    a, b = tenant_pair
    operator = token("operator", "o1", tenant)
    watcher_a = await Client.connect(a, token("dashboard", "wa", tenant))
    watcher_b = await Client.connect(b, token("dashboard", "wb", tenant))
    await watcher_a.subscribe("location:lobby")
    await watcher_b.subscribe("location:lobby")
    player = await Client.connect(b, token("device", "p1", tenant, loc="lobby"))
    elsewhere = await Client.connect(a, token("device", "p2", tenant, loc="hall"))
    expected = {("p1", "device", "b"), ("wa", "dashboard", "a"), ("wb", "dashboard", "b")}

    def listed(node: HubNode) -> set[tuple[str, str, str]]:
        return {(m["sub"], m["role"], m["node"]) for m in node.presence("location:lobby", operator)}

    await eventually(lambda: listed(a) == listed(b) == expected, 5, "both nodes to list the lobby")
    await watcher_a.request("unsubscribe", room="location:lobby")
    await eventually(lambda: listed(b) == expected - {("wa", "dashboard", "a")}, 5, "wa to leave")
    for client in (watcher_a, watcher_b, player, elsewhere):
        await client.close()


async def test_presence_is_refused_or_scoped_like_history(
    shared_single: HubNode, tenant: str
) -> None:
    single, globex, operator = shared_single, f"{tenant}.globex", token("operator", "o1", tenant)
    device = await Client.connect(single, token("device", "p1", tenant=globex, loc="lobby"))
    path = "/v1/rooms/location:lobby/presence"
    assert single.get(path).status_code == 401
    assert single.get(path, token("device", "p2", tenant)).status_code == 403
    assert single.get(path, token("dashboard", "d1", tenant, rooms=["status"])).status_code == 403
    assert single.get("/v1/rooms/-bad/presence", operator).status_code == 400
    assert single.get(path, operator, tenant=globex).status_code == 403
    await eventually(
        lambda: bool(single.presence("devices", token("operator", "g", tenant=globex))),
        5,
        "the globex device to be present",
    )
    assert single.presence("location:lobby", operator) == []
    admin = token("admin", "root", tenant=None)
    assert single.get(path, admin).status_code == 400
    answer = single.get(path, admin, tenant=globex).json()
    assert [member["sub"] for member in answer["members"]] == ["p1"]
    await device.close()


async def test_presence_equals_the_truth_after_random_churn_across_two_nodes(
    tenant_pair: tuple[HubNode, HubNode], tenant: str
) -> None:
    a, b = tenant_pair
    rng = random.Random(4)
    dashboard = await Client.watching_status(a, tenant)
    open_sockets: list[tuple[str, Client]] = []
    for _ in range(120):
        if open_sockets and rng.random() < 0.45:
            sub, client = open_sockets.pop(rng.randrange(len(open_sockets)))
            if rng.random() < 0.5:
                await client.close()
            else:
                client.cut()
        else:
            sub = f"p{rng.randrange(12)}"
            node = rng.choice((a, b))
            open_sockets.append((sub, await Client.connect(node, token("device", sub, tenant))))
        await asyncio.sleep(rng.uniform(0, 0.02))

    truth = sorted((sub, client.welcome["conn"]) for sub, client in open_sockets)

    def present(node: HubNode) -> list[tuple[str, str]]:
        operator = token("operator", "o1", tenant)
        return sorted((m["sub"], m["conn"]) for m in node.presence("devices", operator))

    await eventually(lambda: present(a) == present(b) == truth, 10, "presence to equal the truth")

    # Every device's online and offline events alternate, and end where the device is.
    online_now = {sub for sub, _ in open_sockets}
    expected_final = {f"p{n}": f"p{n}" in online_now for n in range(12)}

    def settled(events: list[dict[str, Any]]) -> bool:
        last: dict[str, bool] = {}
        for name, device in _lifecycle(events):
            last[device] = name == "device.online"
        return all(last.get(sub, False) == up for sub, up in expected_final.items())

    events = await dashboard.events(settled, timeout=15)
    events += await dashboard.drain(within=1.0)
    state: dict[str, bool] = {}
    for name, device in _lifecycle(events):
        now_online = name == "device.online"
        assert state.get(device, False) != now_online, f"{device}: {name} twice in a row"
        state[device] = now_online
    assert {sub: state.get(sub, False) for sub in expected_final} == expected_final
    for _, client in open_sockets:
        await client.close()
    await dashboard.close()
