"""Two `hub serve` nodes and a real redis-server: delivery, isolation, subscriptions, outages."""

from __future__ import annotations

import asyncio
import time

from tests.conftest import NodeFactory
from tests.support import Client, HubNode, RedisServer, eventually, token

OPERATOR = token("operator", "o1")


def _alert(message: str) -> dict[str, str]:
    return {"level": "info", "message": message}


def _room_channels(redis: RedisServer) -> list[str]:
    return sorted(redis.command("PUBSUB", "CHANNELS", "hub:room:*").split())


def _subscribers(redis: RedisServer, channel: str) -> int:
    return int(redis.command("PUBSUB", "NUMSUB", channel).split()[1])


async def test_broadcast_on_one_node_reaches_sockets_on_the_other_both_ways(
    tenant_pair: tuple[HubNode, HubNode], tenant: str
) -> None:
    a, b = tenant_pair
    on_a = await Client.connect(a, token("dashboard", "da", tenant))
    on_b = await Client.connect(b, token("dashboard", "db", tenant))
    await on_a.subscribe("location:lobby")
    await on_b.subscribe("location:lobby")
    operator = token("operator", "o1", tenant)
    for node in (a, b):
        answer = node.broadcast(
            operator, room="location:lobby", event="alert", data=_alert(f"from {node.name}")
        )
        assert answer.status_code == 202
    for client in (on_a, on_b):
        messages = [(await client.next_event())["data"]["message"] for _ in range(2)]
        assert sorted(messages) == ["from a", "from b"]
    await on_a.close()
    await on_b.close()


async def test_socket_publish_on_one_node_reaches_the_other(
    tenant_pair: tuple[HubNode, HubNode], tenant: str
) -> None:
    a, b = tenant_pair
    listener = await Client.connect(b, token("device", "p1", tenant, loc="lobby"))
    publisher = await Client.connect(a, token("dashboard", "d1", tenant, publish=["location:*"]))
    data = {"content_id": "c9", "version": 3}
    answer = await publisher.request(
        "publish", room="location:lobby", event="content.update", data=data
    )
    assert answer["type"] == "ack"
    event = await listener.next_event()
    assert event["room"] == "location:lobby"
    assert event["event"] == "content.update"
    assert event["data"] == data
    assert event["ts"] == answer["ts"]
    await listener.close()
    await publisher.close()


async def test_same_room_name_in_two_tenants_never_mixes(
    tenant_pair: tuple[HubNode, HubNode], tenant: str
) -> None:
    a, b = tenant_pair
    first, second = f"{tenant}.acme", f"{tenant}.globex"
    acme = await Client.connect(a, token("dashboard", "d1", tenant=first))
    globex = await Client.connect(b, token("dashboard", "d2", tenant=second))
    await acme.subscribe("location:lobby")
    await globex.subscribe("location:lobby")
    acme_operator = token("operator", "o1", tenant=first)
    globex_operator = token("operator", "o2", tenant=second)
    a.broadcast(acme_operator, room="location:lobby", event="alert", data=_alert("acme only"))
    assert (await acme.next_event())["data"]["message"] == "acme only"
    await globex.no_event()
    b.broadcast(globex_operator, room="location:lobby", event="alert", data=_alert("globex only"))
    assert (await globex.next_event())["data"]["message"] == "globex only"
    await acme.no_event()
    await acme.close()
    await globex.close()


async def test_multi_room_broadcast_reaches_every_room_across_nodes(
    tenant_pair: tuple[HubNode, HubNode], tenant: str
) -> None:
    a, b = tenant_pair
    lobby = await Client.connect(a, token("device", "p1", tenant, loc="lobby"))
    hall = await Client.connect(b, token("device", "p2", tenant, loc="hall"))
    rooms = ["location:lobby", "location:hall"]
    answer = a.broadcast(
        token("operator", "o1", tenant), rooms=rooms, event="command", data={"name": "x"}
    )
    assert answer.status_code == 202
    assert set(answer.json()["ids"]) == {"location:lobby", "location:hall"}
    assert (await lobby.next_event())["room"] == "location:lobby"
    assert (await hall.next_event())["room"] == "location:hall"
    await lobby.close()
    await hall.close()


async def test_a_node_holds_a_room_channel_only_while_it_has_a_member_there(
    module_redis: RedisServer, shared_pair: tuple[HubNode, HubNode], tenant: str
) -> None:
    """On the shared pair: the channel is of the test's own tenant, which no other test
    subscribes to, so no other test moves its subscriber count."""
    (a, b), redis_server = shared_pair, module_redis
    channel = f"hub:room:{{{tenant}}}:location:lobby"
    assert channel not in _room_channels(redis_server)
    first = await Client.connect(a, token("dashboard", "d1", tenant))
    second = await Client.connect(a, token("dashboard", "d2", tenant))
    await first.subscribe("location:lobby")
    await second.subscribe("location:lobby")
    assert _subscribers(redis_server, channel) == 1
    other = await Client.connect(b, token("dashboard", "d3", tenant))
    await other.subscribe("location:lobby")
    assert _subscribers(redis_server, channel) == 2
    await first.request("unsubscribe", room="location:lobby")
    await other.close()
    await eventually(lambda: _subscribers(redis_server, channel) == 1, 5, "b to leave the channel")
    await second.close()
    await eventually(
        lambda: channel not in _room_channels(redis_server), 5, "a to leave the channel"
    )


async def test_redis_outage_is_refused_clearly_and_recovered_by_itself(
    hub_node: NodeFactory, redis_server: RedisServer
) -> None:
    a, b = hub_node("a", redis_server.url), hub_node("b", redis_server.url)
    listener = await Client.connect(a, token("dashboard", "d1"))
    await listener.subscribe("location:lobby")
    redis_server.stop()
    # Events published from now on would never reach it: it is told to resume elsewhere.
    assert await listener.closed_with() == 1012
    await eventually(lambda: not a.ready() and not b.ready(), 10, "nodes to report not ready")
    refused = b.broadcast(OPERATOR, room="location:lobby", event="alert", data=_alert("lost?"))
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "unavailable"
    other = await Client.connect(b, token("dashboard", "d2"))
    assert (await other.request("subscribe", room="location:hall"))["code"] == "unavailable"

    redis_server.start()
    await eventually(lambda: a.ready() and b.ready(), 20, "nodes to reconnect to redis")
    listener = await Client.connect(a, token("dashboard", "d1"))
    assert not (await listener.subscribe("location:lobby", since="0-0", epoch="lost"))["recovered"]
    assert "hub:room:{acme}:location:lobby" in _room_channels(redis_server)
    delivered = b.broadcast(OPERATOR, room="location:lobby", event="alert", data=_alert("back"))
    assert delivered.status_code == 202
    assert (await listener.next_event())["data"]["message"] == "back"
    await other.subscribe("location:hall")
    await listener.close()
    await other.close()


async def test_a_node_started_while_redis_is_down_becomes_ready_when_it_comes_up(
    redis_server: RedisServer,
) -> None:
    redis_server.stop()
    node = HubNode("late", redis_server.url)
    node.start(ready=False)
    try:
        assert not node.ready()
        redis_server.start()
        await eventually(node.ready, 20, "the node to connect to redis")
        client = await Client.connect(node, token("device", "p1"))
        node.broadcast(OPERATOR, room="device:p1", event="command", data={"name": "hello"})
        assert (await client.next_event())["data"] == {"name": "hello"}
        await client.close()
    finally:
        node.stop()


async def test_concurrent_joins_of_a_new_room_all_get_live_subscriptions(
    tenant_pair: tuple[HubNode, HubNode], tenant: str
) -> None:
    a, b = tenant_pair
    clients = [await Client.connect(a, token("dashboard", f"d{i}", tenant)) for i in range(20)]
    await asyncio.gather(*(client.subscribe("group:new") for client in clients))
    operator = token("operator", "o1", tenant)
    answer = b.broadcast(operator, room="group:new", event="command", data={"name": "go"})
    assert answer.status_code == 202
    for client in clients:
        assert (await client.next_event())["data"] == {"name": "go"}
        await client.close()


async def test_a_node_without_rooms_stays_connected_across_health_pings(
    hub_node: NodeFactory, redis_server: RedisServer
) -> None:
    node = hub_node("idle", redis_server.url)
    deadline = time.monotonic() + 7.5  # past two health pings of an unsubscribed connection
    while time.monotonic() < deadline:
        assert node.ready()
        await asyncio.sleep(0.2)
    assert "reconnecting" not in node.output()
    assert " lost (subscriber)" not in node.output()


async def test_a_node_hears_its_canary_on_every_deployment(
    tenant_pair: tuple[HubNode, HubNode], tenant: str
) -> None:
    """The canary that tells a deaf subscriber is published in the deployment's dialect:
    on a Redis Cluster, sent as bytes, SPUBLISH was refused before it left the client,
    and the watch stopped at its first canary unheard."""
    node, _ = tenant_pair
    listener = await Client.connect(node, token("dashboard", "d1", tenant))
    await listener.subscribe("location:lobby")
    await eventually(
        lambda: "hub_canary_round_trip_seconds{" in node.get("/metrics").text,
        10,
        "the canary's round trip",
    )
    await listener.close()
