"""A node that dies: its devices are reported offline once, in time, by the survivors;
devices that moved in time never are; a node declared dead brings nothing stale back."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from typing import Any

from tests.conftest import NodeFactory, Redis
from tests.support import Client, HubNode, RedisServer, eventually, token

OPERATOR = token("operator", "o1")
DEVICES = 200
MOVERS = 20
HEARTBEAT_TIMEOUT = 10.0
NODE_TTL = 3.0
FAST = {"heartbeat_interval": 2.0, "heartbeat_timeout": HEARTBEAT_TIMEOUT, "node_ttl": NODE_TTL}


def _offline(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [event["data"] for event in events if event["event"] == "device.offline"]


async def _beat(clients: list[Client]) -> None:
    while True:
        for client in clients:
            await client.send({"op": "heartbeat", "data": {"status": "playing"}})
        await asyncio.sleep(1.0)


def _pair(hub_node: NodeFactory, redis: Redis) -> tuple[HubNode, HubNode]:
    return (
        hub_node("a", redis.url, **FAST, **redis.settings),
        hub_node("b", redis.url, **FAST, **redis.settings),
    )


def _subs(node: HubNode, room: str) -> list[str]:
    return sorted(member["sub"] for member in node.presence(room, OPERATOR))


async def test_sigkill_of_a_node_reports_each_device_offline_once_on_time_except_movers(
    hub_node: NodeFactory, redis: Redis
) -> None:
    doomed = hub_node("a", redis.url, **FAST, **redis.settings)
    b = hub_node("b", redis.url, **FAST, **redis.settings)
    hub_node("c", redis.url, **FAST, **redis.settings)
    dashboard = await Client.watching_status(b)
    held = DEVICES + MOVERS  # the first MOVERS devices reconnect to b in time
    devices = [await Client.connect(doomed, token("device", f"p{n}")) for n in range(held)]
    await dashboard.events(lambda seen: len(seen) >= held, timeout=30)
    await eventually(lambda: len(b.presence("devices", OPERATOR)) == held, 10, "all present")

    doomed.stop(signal.SIGKILL)
    killed = time.monotonic()
    for device in devices:
        device.cut()
    movers = [await Client.connect(b, token("device", f"p{n}")) for n in range(MOVERS)]
    beating = asyncio.create_task(_beat(movers))

    bound = HEARTBEAT_TIMEOUT + 15
    events = await dashboard.events(lambda seen: len(_offline(seen)) >= DEVICES, timeout=bound)
    assert time.monotonic() - killed <= bound
    # Two survivors reap: wait through several more of their rounds for any repeat.
    events += await dashboard.drain(within=3 * NODE_TTL)
    offline = _offline(events)
    counts = Counter(data["device"] for data in offline)
    assert set(counts) == {f"p{n}" for n in range(MOVERS, held)}
    assert set(counts.values()) == {1}
    assert all(data["node"] == "a" and data["reason"] == "node_lost" for data in offline)
    assert _subs(b, "devices") == sorted(f"p{n}" for n in range(MOVERS))
    beating.cancel()
    for mover in movers:
        await mover.close()
    await dashboard.close()


async def test_a_node_declared_dead_comes_back_without_resurrecting_what_closed(
    hub_node: NodeFactory, redis: Redis
) -> None:
    a, b = _pair(hub_node, redis)
    dashboard = await Client.watching_status(b)
    stays = await Client.connect(a, token("device", "stays"))
    leaves = await Client.connect(a, token("device", "leaves"))
    await dashboard.events(lambda seen: len(seen) >= 2, timeout=10)
    # The device that stays keeps beating, so only the node's death can take it offline.
    beating = asyncio.create_task(_beat([stays]))

    a.pause()
    try:
        events = await dashboard.events(lambda seen: len(_offline(seen)) >= 2, timeout=30)
        assert sorted(data["device"] for data in _offline(events)) == ["leaves", "stays"]
        assert _subs(b, "devices") == []
        leaves.cut()  # a learns of it only once it runs again
    finally:
        a.resume()

    events = await dashboard.events(
        lambda seen: any(event["event"] == "device.online" for event in seen), timeout=15
    )
    events += await dashboard.drain(within=2 * NODE_TTL)
    assert [
        (event["event"], event["data"]["device"])
        for event in events
        if event["event"] != "device.heartbeat"
    ] == [("device.online", "stays")]
    assert _subs(a, "devices") == _subs(b, "devices") == ["stays"]
    await eventually(
        lambda: b.presence("devices", OPERATOR)[0]["heartbeat"] is not None, 5, "its heartbeat"
    )
    beating.cancel()
    await stays.close()
    await dashboard.close()


async def test_presence_is_rebuilt_after_redis_loses_everything(
    hub_node: NodeFactory, redis_server: RedisServer
) -> None:
    a, b = _pair(hub_node, redis_server)
    on_a = await Client.connect(a, token("device", "pa"))
    on_b = await Client.connect(b, token("device", "pb"))
    await eventually(lambda: _subs(a, "devices") == ["pa", "pb"], 5, "both present")

    watcher = await Client.connect(b, token("dashboard", "roomless"))
    redis_server.stop()
    redis_server.start()
    # The devices' rooms missed what was published meanwhile: they are told to resume.
    assert await on_a.closed_with() == await on_b.closed_with() == 1012
    await eventually(lambda: a.ready() and b.ready(), 20, "both nodes to reconnect")
    on_a = await Client.connect(a, token("device", "pa"))
    on_b = await Client.connect(b, token("device", "pb"))
    await eventually(lambda: _subs(a, "devices") == ["pa", "pb"], 20, "presence to be rebuilt")
    # A socket in no room missed nothing: it stays open. Its join is written only if the
    # rebuild wrote the socket itself again (a join of a socket Redis does not hold is
    # skipped), so seeing it in the room shows the rebuild.
    await watcher.subscribe("devices")
    await eventually(
        lambda: _subs(a, "devices") == ["pa", "pb", "roomless"], 10, "the rebuilt socket's join"
    )
    await on_a.close()
    await on_b.close()
    await watcher.close()
