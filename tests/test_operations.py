"""Running it: /v1/stats for one node and the cluster, /metrics, admission and /readyz."""

from __future__ import annotations

import asyncio

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.conftest import NodeFactory
from tests.support import Client, HubNode, eventually, free_port, token

OPERATOR = token("operator", "o1")
ADMIN = token("admin", "root", tenant=None)
STATS_KEY = "stats-key-for-tests"


def _stats(node: HubNode, bearer: str = ADMIN) -> dict[str, object]:
    answer = node.get("/v1/stats", bearer)
    assert answer.status_code == 200, answer.text
    body: dict[str, object] = answer.json()
    return body


async def test_stats_count_this_node_and_sum_the_cluster(pair: tuple[HubNode, HubNode]) -> None:
    a, b = pair
    devices = [await Client.connect(a, token("device", f"p{n}", loc="lobby")) for n in range(3)]
    dashboard = await Client.connect(b, token("dashboard", "d1"))
    await dashboard.subscribe("location:lobby")
    for n in range(4):
        answer = b.broadcast(OPERATOR, room="location:lobby", event="x.tick", data={"n": n})
        assert answer.status_code == 202
    for client in devices:
        for _ in range(4):
            await client.next_event()

    def settled() -> bool:
        cluster = _stats(a)["cluster"]
        assert isinstance(cluster, dict)
        return len(cluster["nodes"]) == 2 and cluster["messages"]["out"] == 16

    await eventually(settled, 10, "both nodes' figures in the cluster stats")
    stats = _stats(a)
    node, cluster = stats["node"], stats["cluster"]
    assert isinstance(node, dict)
    assert isinstance(cluster, dict)
    assert node["node"] == "a"
    assert node["connections"] == {
        "total": 3,
        "device": 3,
        "dashboard": 0,
        "operator": 0,
        "admin": 0,
    }
    assert node["rooms"] == 5  # device:p0, device:p1, device:p2, devices, location:lobby
    assert node["messages"]["out"] == 12
    assert node["capacity"] == {"max_connections": 18000, "utilization": 3 / 18000}
    assert node["draining"] is False
    assert cluster["connections"]["total"] == 4
    assert cluster["connections"]["dashboard"] == 1
    assert cluster["messages"]["in"] == 4
    assert cluster["capacity"]["max_connections"] == 36000
    assert [n["node"] for n in cluster["nodes"]] == ["a", "b"]
    assert cluster["draining"] is False
    for client in [*devices, dashboard]:
        await client.close()


async def test_an_operator_sees_its_own_tenants_share_only(
    pair: tuple[HubNode, HubNode],
) -> None:
    a, b = pair
    acme = [await Client.connect(a, token("device", f"p{n}")) for n in range(3)]
    globex = await Client.connect(b, token("device", "g1", tenant="globex"))
    assert b.broadcast(OPERATOR, room="devices", event="x.tick", data={}).status_code == 202
    for client in acme:
        await client.next_event()

    def both_posted() -> bool:
        cluster = _stats(a, OPERATOR)["cluster"]
        assert isinstance(cluster, dict)
        return bool(cluster["nodes"] == 2 and cluster["messages"]["out"] == 3)

    await eventually(both_posted, 10, "both nodes' figures")
    mine = _stats(a, OPERATOR)
    assert mine["node"] == {
        "node": "a",
        "tenant": "acme",
        "connections": {"total": 3, "device": 3, "dashboard": 0, "operator": 0, "admin": 0},
        "transports": {"websocket": 3, "stream": 0},
        "rooms": 4,
        "messages": {"in": 0, "out": 3},
        "draining": False,
    }
    cluster = mine["cluster"]
    assert isinstance(cluster, dict)
    assert (cluster["connections"]["total"], cluster["messages"]["in"]) == (3, 1)
    theirs = _stats(b, token("operator", "o2", tenant="globex"))
    assert isinstance(theirs["cluster"], dict)
    assert theirs["cluster"]["connections"]["total"] == 1
    assert "globex" not in str(mine)
    for client in [*acme, globex]:
        await client.close()


def test_stats_are_for_operators_admins_and_the_stats_key(hub_node: NodeFactory) -> None:
    node = hub_node("keyed", stats_key=STATS_KEY)
    assert node.get("/v1/stats").status_code == 401
    assert node.get("/v1/stats", token("dashboard", "d1")).status_code == 403
    assert node.get("/v1/stats", token("device", "p1")).status_code == 403
    assert node.get("/v1/stats", token("admin", "root", tenant=None)).status_code == 200
    assert node.get("/v1/stats", STATS_KEY).status_code == 200
    body = node.get("/v1/stats", STATS_KEY).json()
    assert set(body) == {"node", "cluster"}


async def test_metrics_show_connections_messages_latency_and_state(
    hub_node: NodeFactory,
) -> None:
    metrics_port = free_port()
    node = hub_node("scraped", stats_key=STATS_KEY, metrics_port=metrics_port)
    device = await Client.connect(node, token("device", "p1"))
    node.broadcast(OPERATOR, room="devices", event="x.tick", data={})
    await device.next_event()
    assert node.get("/metrics").status_code == 401
    text = node.get("/metrics", STATS_KEY).text
    open_port = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    for scrape in (text, open_port):
        assert 'hub_connections{role="device"} 1.0' in scrape
        assert "hub_capacity_connections 18000.0" in scrape
        assert "hub_messages_in_total 1.0" in scrape
        assert "hub_messages_out_total 1.0" in scrape
        assert "hub_delivery_latency_seconds_count 1.0" in scrape
        assert "hub_draining 0.0" in scrape
        assert "hub_broker_up 1.0" in scrape
        assert "hub_send_queue_bytes" in scrape
        assert "hub_rooms 2.0" in scrape
    await device.close()


async def test_a_full_node_refuses_new_sockets_with_1013_and_is_not_ready(
    hub_node: NodeFactory,
) -> None:
    node = hub_node("small", max_connections=2)
    first = await Client.connect(node, token("dashboard", "d1"))
    second = await Client.connect(node, token("dashboard", "d2"))
    await eventually(lambda: node.get("/readyz").status_code == 503, 5, "readyz to say full")
    assert node.get("/readyz").json()["reason"] == "full"
    assert await _refused_socket(node) == 1013
    await first.close()
    await eventually(lambda: node.get("/readyz").status_code == 200, 5, "readyz to recover")
    await second.close()
    assert 'hub_handshakes_refused_total{reason="full"}' in node.get("/metrics").text


async def _refused_socket(node: HubNode) -> int | None:
    """Open a socket the node accepts and closes at once: its close code."""
    headers = {"Authorization": f"Bearer {token('dashboard', 'late')}"}
    async with connect(node.ws_url, additional_headers=headers) as ws:
        await ws.wait_closed()
        return ws.close_code


async def test_handshakes_past_the_per_address_rate_get_429(hub_node: NodeFactory) -> None:
    node = hub_node("guarded", connect_rate=3)
    answers: list[tuple[int, str | None]] = []
    for n in range(8):
        try:
            client = await Client.connect(node, token("dashboard", f"d{n}"))
            answers.append((101, None))
            await client.close()
        except InvalidStatus as refused:
            response = refused.response
            answers.append((response.status_code, response.headers.get("Retry-After")))
    assert answers[:3] == [(101, None)] * 3
    assert (429, "1") in answers
    await asyncio.sleep(1.1)
    await (await Client.connect(node, token("dashboard", "later"))).close()
