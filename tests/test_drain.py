"""Graceful drain on SIGTERM, alone, across two nodes, and behind HAProxy in a rolling
restart: /readyz says so at once, sockets close with 1012 spread over the window, a node
with nothing to drain still serves, unready, for the unready time, nothing published is
lost to clients that resume, devices that move are never reported offline, and the
process exits 0."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.conftest import NodeFactory, Redis
from tests.support import (
    Client,
    Crowd,
    HAProxy,
    HubNode,
    Recorder,
    eventually,
    history_ids,
    publish_numbered,
    token,
    wait_until,
)

DRAIN = 2.0


async def _closed_at(client: Client) -> tuple[int | None, float]:
    code = await client.closed_with(timeout=DRAIN + 10)
    return code, time.monotonic()


async def _refused_code(node_url: str) -> int | None:
    headers = {"Authorization": f"Bearer {token('dashboard', 'late')}"}
    async with connect(node_url, additional_headers=headers) as ws:
        await ws.wait_closed()
        return ws.close_code


async def test_sigterm_turns_readyz_503_closes_sockets_spread_over_the_window_and_exits_0(
    hub_node: NodeFactory,
) -> None:
    node = hub_node("draining", drain_seconds=DRAIN)
    clients = [await Client.connect(node, token("dashboard", f"d{n}")) for n in range(10)]
    closing = [asyncio.create_task(_closed_at(client)) for client in clients]
    node.signal(signal.SIGTERM)
    await eventually(lambda: node.get("/readyz").status_code == 503, 1.0, "readyz to turn 503")
    assert node.get("/readyz").json()["reason"] == "draining"
    assert await _refused_code(node.ws_url) == 1012
    closes = await asyncio.gather(*closing)
    assert {code for code, _ in closes} == {1012}
    times = sorted(at for _, at in closes)
    assert times[-1] - times[0] >= DRAIN * 0.6  # ten closes at 0, 0.2, ... 1.8 s
    assert await asyncio.to_thread(node.exit_code) == 0


UNREADY = 2.0


def _serving_round(node: HubNode, bearer: str) -> bool:
    """One round of what a load balancer and a script send a stopping node: True when
    `/readyz` said 503 `draining` while `/healthz` and a broadcast still succeeded, False
    once the node no longer answers."""
    try:
        ready = node.get("/readyz")
        healthy = node.get("/healthz")
        published = node.broadcast(bearer, room="lobby", event="x.tick", data={"n": 1})
    except httpx.TransportError:
        return False
    assert (ready.status_code, ready.json()["reason"]) == (503, "draining")
    assert healthy.status_code == 200
    assert published.status_code == 202, published.text
    return True


def test_a_node_without_sockets_stays_unready_but_serving_for_the_unready_time(
    hub_node: NodeFactory,
) -> None:
    # Nothing to drain: without the unready time the node stopped listening 0.05 s after
    # SIGTERM, before any balancer's health check could see it answer 503.
    node = hub_node("leaving", unready_seconds=UNREADY)
    bearer = token("operator", "script")
    assert node.ready()
    signalled = time.monotonic()
    node.signal(signal.SIGTERM)
    wait_until(lambda: node.get("/readyz").status_code == 503, 2.0, "readyz to turn 503")
    served: list[float] = []
    while _serving_round(node, bearer):
        served.append(time.monotonic() - signalled)
        time.sleep(0.2)
    assert served, "the node stopped answering at once"
    assert served[-1] >= UNREADY * 0.8, served  # a lower bound: a slow machine only adds
    assert node.exit_code() == 0


@pytest.fixture
def pair_draining(hub_node: NodeFactory, redis: Redis) -> list[HubNode]:
    settings = {"drain_seconds": DRAIN, "handover_seconds": 3, "node_ttl": 3, "broadcast_rate": 0}
    return [hub_node(name, redis.url, **settings, **redis.settings) for name in ("a", "b")]


async def test_devices_of_a_drained_node_move_without_going_offline_and_miss_nothing(
    pair_draining: list[HubNode],
) -> None:
    a, b = pair_draining
    dashboard = await Client.watching_status(b)
    movers = Crowd(
        [
            Recorder([a.ws_url, b.ws_url], token("device", f"p{n}", rooms=["feed"]), ["feed"])
            for n in range(10)
        ]
    )
    await movers.start()
    straggler = await Client.connect(a, token("device", "straggler"))
    await dashboard.events(
        lambda seen: any(e["data"]["device"] == "straggler" for e in seen), timeout=10
    )

    published: list[str] = []
    publishing = asyncio.create_task(publish_numbered(b.url, "feed", 150, published))
    await asyncio.sleep(0.5)
    a.signal(signal.SIGTERM)
    assert await straggler.closed_with(timeout=DRAIN + 5) == 1012
    left_at = time.monotonic()
    assert await asyncio.to_thread(a.exit_code) == 0
    await publishing

    full = history_ids(b, "feed")
    assert full == sorted(published, key=lambda i: tuple(map(int, i.split("-"))))
    await movers.received_exactly(full)

    events = await dashboard.events(
        lambda seen: any(e["event"] == "device.offline" for e in seen), timeout=15
    )
    waited = time.monotonic() - left_at
    events += await dashboard.drain(within=2.0)
    offline = [event["data"] for event in events if event["event"] == "device.offline"]
    assert offline == [{"device": "straggler", "node": "a", "reason": "node_restart"}]
    assert waited >= 2.5  # the handover window (3 s) passed first
    assert Counter(e["event"] for e in events)["device.online"] == 0
    await movers.stop()
    await dashboard.close()


async def test_a_rolling_restart_behind_haproxy_loses_nothing_for_resuming_clients(
    hub_node: NodeFactory, redis: Redis
) -> None:
    settings = {"drain_seconds": 1.0, "broadcast_rate": 0}
    nodes = [hub_node(name, redis.url, **settings, **redis.settings) for name in ("a", "b", "c")]
    proxy = HAProxy(nodes)
    proxy.start()
    try:
        watchers = [
            Recorder([proxy.ws_url], token("dashboard", f"w{n}"), ["feed"]) for n in range(30)
        ]
        crowd = Crowd(watchers)
        await crowd.start()
        spread = Counter((watcher.client.welcome or {})["node"] for watcher in watchers)
        assert len(spread) == 3, spread  # leastconn put sockets on every node

        published: list[str] = []
        publishing = asyncio.create_task(publish_numbered(proxy.url, "feed", 200, published))
        await asyncio.sleep(0.5)
        for node in nodes:  # one node at a time, as a rolling update would
            node.signal(signal.SIGTERM)
            assert await asyncio.to_thread(node.exit_code) == 0
            await asyncio.to_thread(node.start)
            await asyncio.sleep(0.5)
        await publishing

        full = history_ids(nodes[0], "feed")
        assert sorted(full) == sorted(published)

        await crowd.received_exactly(full)
        await crowd.stop()
    finally:
        proxy.stop()
