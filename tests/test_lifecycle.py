"""Device lifecycle events and the presence endpoint, on one node and across two."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from tests.conftest import NodeFactory, Redis
from tests.support import Client, HubNode, eventually, metric, token

OPERATOR = token("operator", "o1")


@pytest.fixture(params=["one node", "two nodes", "two nodes on a cluster"])
def nodes(request: pytest.FixtureRequest, hub_node: NodeFactory) -> tuple[HubNode, HubNode]:
    """Where the device and where the dashboard connect: the same node, or two through
    Redis (one server, or a Redis Cluster)."""
    if request.param == "one node":
        node = hub_node("solo")
        return node, node
    fixture = "redis_server" if request.param == "two nodes" else "redis_cluster"
    redis: Redis = request.getfixturevalue(fixture)
    return hub_node("a", redis.url, **redis.settings), hub_node("b", redis.url, **redis.settings)


def _lifecycle(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [
        (event["event"], event["data"]["device"])
        for event in events
        if event["event"] in ("device.online", "device.offline")
    ]


async def test_online_heartbeat_and_offline_reach_the_status_room_and_presence(
    nodes: tuple[HubNode, HubNode],
) -> None:
    device_node, dashboard_node = nodes
    dashboard = await Client.watching_status(dashboard_node)
    device = await Client.connect(device_node, token("device", "p1", loc="lobby"))

    online = await dashboard.next_event()
    assert (online["room"], online["event"]) == ("status", "device.online")
    assert online["data"] == {"device": "p1", "node": device_node.name, "loc": "lobby"}

    await device.send({"op": "heartbeat", "data": {"status": "playing", "cpu": 12.5}})
    beat = await dashboard.next_event()
    assert beat["event"] == "device.heartbeat"
    assert beat["data"] == {"device": "p1", "status": "playing", "cpu": 12.5}

    def recorded() -> bool:
        members = dashboard_node.presence("location:lobby", OPERATOR)
        return len(members) == 1 and members[0]["heartbeat"] is not None

    await eventually(recorded, 5, "the heartbeat to show in presence")
    [member] = dashboard_node.presence("location:lobby", OPERATOR)
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
        lambda: not dashboard_node.presence("devices", OPERATOR), 5, "presence to empty"
    )
    await dashboard.close()


async def test_a_batch_of_heartbeats_alone_is_one_round_trip_and_a_connect_two(
    hub_node: NodeFactory, redis: Redis
) -> None:
    """A batch that may add a socket first tells the registry its tenants (`ENROL`); one
    of heartbeats alone only writes for sockets Redis holds, and goes straight out."""
    node = hub_node("a", redis.url, **redis.settings)
    dashboard = await Client.watching_status(node)
    device = await Client.connect(node, token("device", "p1"))
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
    nodes: tuple[HubNode, HubNode],
) -> None:
    first_node, second_node = nodes
    dashboard = await Client.watching_status(second_node)
    first = await Client.connect(first_node, token("device", "p1"))
    assert _lifecycle([await dashboard.next_event()]) == [("device.online", "p1")]
    second = await Client.connect(second_node, token("device", "p1"))
    await first.close()

    def only_the_second() -> bool:
        members = first_node.presence("device:p1", OPERATOR)
        return [member["conn"] for member in members] == [second.welcome["conn"]]

    await eventually(only_the_second, 5, "presence to keep only the second socket")
    await dashboard.no_event(within=1.0)
    await second.close()
    assert _lifecycle([await dashboard.next_event()]) == [("device.offline", "p1")]
    await dashboard.close()


async def test_presence_lists_dashboards_and_devices_of_a_room_on_every_node(
    pair: tuple[HubNode, HubNode],
) -> None:
    a, b = pair
    watcher_a = await Client.connect(a, token("dashboard", "wa"))
    watcher_b = await Client.connect(b, token("dashboard", "wb"))
    await watcher_a.subscribe("location:lobby")
    await watcher_b.subscribe("location:lobby")
    player = await Client.connect(b, token("device", "p1", loc="lobby"))
    elsewhere = await Client.connect(a, token("device", "p2", loc="hall"))
    expected = {("p1", "device", "b"), ("wa", "dashboard", "a"), ("wb", "dashboard", "b")}

    def listed(node: HubNode) -> set[tuple[str, str, str]]:
        return {(m["sub"], m["role"], m["node"]) for m in node.presence("location:lobby", OPERATOR)}

    await eventually(lambda: listed(a) == listed(b) == expected, 5, "both nodes to list the lobby")
    await watcher_a.request("unsubscribe", room="location:lobby")
    await eventually(lambda: listed(b) == expected - {("wa", "dashboard", "a")}, 5, "wa to leave")
    for client in (watcher_a, watcher_b, player, elsewhere):
        await client.close()


async def test_presence_is_refused_or_scoped_like_history(single: HubNode) -> None:
    device = await Client.connect(single, token("device", "p1", tenant="globex", loc="lobby"))
    path = "/v1/rooms/location:lobby/presence"
    assert single.get(path).status_code == 401
    assert single.get(path, token("device", "p2")).status_code == 403
    assert single.get(path, token("dashboard", "d1", rooms=["status"])).status_code == 403
    assert single.get("/v1/rooms/-bad/presence", OPERATOR).status_code == 400
    assert single.get(path, OPERATOR, tenant="globex").status_code == 403
    await eventually(
        lambda: bool(single.presence("devices", token("operator", "g", tenant="globex"))),
        5,
        "the globex device to be present",
    )
    assert single.presence("location:lobby", OPERATOR) == []
    admin = token("admin", "root", tenant=None)
    assert single.get(path, admin).status_code == 400
    answer = single.get(path, admin, tenant="globex").json()
    assert [member["sub"] for member in answer["members"]] == ["p1"]
    await device.close()


async def test_presence_equals_the_truth_after_random_churn_across_two_nodes(
    pair: tuple[HubNode, HubNode],
) -> None:
    a, b = pair
    rng = random.Random(4)
    dashboard = await Client.watching_status(a)
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
            open_sockets.append((sub, await Client.connect(node, token("device", sub))))
        await asyncio.sleep(rng.uniform(0, 0.02))

    truth = sorted((sub, client.welcome["conn"]) for sub, client in open_sockets)

    def present(node: HubNode) -> list[tuple[str, str]]:
        return sorted((m["sub"], m["conn"]) for m in node.presence("devices", OPERATOR))

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
