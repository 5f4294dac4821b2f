"""Redis that fails over: a Sentinel-watched master, and a cluster master, killed while
nodes publish and resuming clients receive. Every client ends with exactly the room's
history, or was told `recovered: false`; never a silent gap."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from tests.conftest import NodeFactory
from tests.support import (
    Client,
    Crowd,
    DeafProxy,
    HubNode,
    Recorder,
    RedisCluster,
    RedisServer,
    SentinelSet,
    eventually,
    history_ids,
    metric,
    publish_numbered,
    token,
)

CLIENTS = 50
EVENTS = 150
OPERATOR = token("operator", "o1")
ALERT = {"level": "info", "message": "canary test"}


Trouble = Callable[[], Awaitable[None]]
"""What befalls Redis halfway through the publishing."""


async def _publish_through(nodes: tuple[HubNode, HubNode], trouble: Trouble) -> list[str]:
    """Both nodes publish into `feed`, through `trouble` halfway. The ids accepted."""
    published: list[str] = []
    halves = [
        asyncio.create_task(publish_numbered(node.url, "feed", EVENTS // 2, published))
        for node in nodes
    ]

    async def halfway() -> bool:
        return len(published) >= EVENTS // 2

    await eventually(halfway, 60, "half the events to be published")
    await trouble()
    await asyncio.wait_for(asyncio.gather(*halves), 120)
    return published


def _exact_or_told(crowd: Crowd, node: HubNode, lossless: bool) -> None:
    """Each client was handed the room's history exactly, or was told it missed events, and
    only for a reason: it had seen an event the history no longer holds (lost with the
    failed master before its replica had it). Nothing is lost when `lossless`."""
    history = history_ids(node, "feed")
    for recorder in crowd.recorders:
        assert len(recorder.ids) == len(set(recorder.ids)), "an event was handed over twice"
        assert recorder.ids == sorted(recorder.ids, key=lambda i: tuple(map(int, i.split("-"))))
        if recorder.lost:
            assert not lossless, f"told {recorder.lost} though nothing was lost"
            assert set(recorder.ids) - set(history), "told without having seen a lost event"
        else:
            assert recorder.ids == history


def _present(node: HubNode) -> list[str]:
    return sorted(member["sub"] for member in node.presence("devices", token("operator", "o")))


def _nodes(hub_node: NodeFactory, url: str | None, **settings: str) -> tuple[HubNode, HubNode]:
    settings = {**settings, "heartbeat_timeout": "60"}
    return hub_node("a", url, **settings), hub_node("b", url, **settings)


async def _chaos(
    nodes: tuple[HubNode, HubNode], trouble: Trouble, *, lossless: bool = False
) -> None:
    """50 resuming devices in `feed` through `trouble`: each ends exact or told, and
    presence equals the truth, before and after they leave."""
    a, b = nodes
    crowd = Crowd(
        [
            Recorder(
                [a.ws_url, b.ws_url] if n % 2 else [b.ws_url, a.ws_url],
                token("device", f"p{n}", rooms=["feed"]),
                ["feed"],
            )
            for n in range(CLIENTS)
        ]
    )
    await crowd.start(timeout=60)
    await _publish_through(nodes, trouble)
    history = history_ids(a, "feed")

    async def settled() -> bool:
        return all(r.lost or len(r.ids) >= len(history) for r in crowd.recorders)

    await eventually(settled, 60, "every client to catch up or be told")
    _exact_or_told(crowd, a, lossless)
    everyone = sorted(f"p{n}" for n in range(CLIENTS))
    await eventually(lambda: _present(a) == _present(b) == everyone, 30, "presence to hold")
    await crowd.stop()
    await eventually(lambda: _present(a) == _present(b) == [], 30, "presence to empty")


async def test_a_sentinel_failover_loses_no_event_silently(
    sentinel_set: SentinelSet, hub_node: NodeFactory
) -> None:
    """The Sentinel set is asked for first so that it outlives the nodes: a node stopping
    without its Redis waits for it."""
    old = sentinel_set.current_master()

    async def kill() -> None:
        old.stop()

    await _chaos(_nodes(hub_node, None, **sentinel_set.settings), kill)
    assert sentinel_set.current_master() is not old


async def test_a_cluster_master_failover_loses_no_event_silently(
    hub_node: NodeFactory, own_cluster: RedisCluster
) -> None:
    victim = own_cluster.master_of("acme")

    async def kill() -> None:
        victim.stop()  # SIGKILL

    await _chaos(_nodes(hub_node, own_cluster.url, **own_cluster.settings), kill)
    assert own_cluster.master_of("acme") is not victim


async def test_a_slot_migration_under_load_loses_no_event_silently(
    hub_node: NodeFactory, own_cluster: RedisCluster
) -> None:
    source = own_cluster.master_of("acme")
    target = next(master for master in own_cluster.masters() if master is not source)

    async def reshard() -> None:
        await asyncio.to_thread(own_cluster.move_slots, source, target)

    await _chaos(_nodes(hub_node, own_cluster.url, **own_cluster.settings), reshard, lossless=True)
    assert own_cluster.master_of("acme") is target


async def test_a_node_deaf_to_its_subscription_is_not_ready_and_rebuilds_it(
    hub_node: NodeFactory, redis_server: RedisServer
) -> None:
    """A subscriber connection that stays up and answers pings but carries no message is
    found by its canary: the node is not ready, its room's members are told to resume, and
    the subscription is rebuilt."""
    proxy = DeafProxy(redis_server.port)
    proxy.start()
    try:
        node = hub_node("a", proxy.url)
        listener = await Client.connect(node, token("dashboard", "d1"))
        await listener.subscribe("location:lobby")
        sent = node.broadcast(OPERATOR, room="location:lobby", event="alert", data=ALERT)
        assert sent.status_code == 202
        assert (await listener.next_event())["event"] == "alert"
        await eventually(
            lambda: "hub_canary_round_trip_seconds{" in node.get("/metrics").text, 10, "rtt"
        )

        proxy.silenced = True
        assert await listener.closed_with(timeout=20) == 1012
        await eventually(lambda: not node.ready(), 20, "the deaf node to say it is not ready")
        assert "heard no canary" in node.output()

        proxy.silenced = False
        await eventually(node.ready, 20, "the node to hear again")
        assert metric(node, "hub_deaf_subscribers_total") >= 1
        listener = await Client.connect(node, token("dashboard", "d1"))
        await listener.subscribe("location:lobby")
        sent = node.broadcast(OPERATOR, room="location:lobby", event="alert", data=ALERT)
        assert sent.status_code == 202
        assert (await listener.next_event())["event"] == "alert"
        await listener.close()
    finally:
        proxy.stop()
