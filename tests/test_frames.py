"""Frames over a real socket, on one node with nothing else running."""

from __future__ import annotations

import time
from unittest.mock import ANY

import orjson
import pytest

from tests.conftest import NodeFactory
from tests.support import Client, HubNode, token


@pytest.fixture(scope="module")
def small_frames(module_nodes: NodeFactory) -> HubNode:
    """The frame-limit tests' node: a frame over the limit closes only its own socket."""
    return module_nodes("frames", max_frame_bytes=2048)


async def test_welcome_is_first_and_describes_the_session(shared_single: HubNode) -> None:
    bearer = token("device", "p1", "frames-welcome", loc="lobby", groups=["g1"])
    client = await Client.connect(shared_single, bearer)
    welcome = client.welcome
    assert welcome["v"] == 1
    assert welcome["node"] == "solo"
    assert welcome["role"] == "device"
    assert welcome["sub"] == "p1"
    assert welcome["tenant"] == "frames-welcome"
    assert welcome["rooms"] == ["device:p1", "devices", "location:lobby", "group:g1"]
    assert welcome["heartbeat"] == {"interval": 15.0, "timeout": 45.0}
    assert welcome["conn"]
    await client.close()


async def test_device_receives_events_of_its_auto_joined_rooms(shared_single: HubNode) -> None:
    tenant = "frames-auto-joined"
    device = await Client.connect(
        shared_single, token("device", "p1", tenant, loc="lobby", groups=["g1"])
    )
    operator = token("operator", "o1", tenant)
    for room in ["device:p1", "devices", "location:lobby", "group:g1"]:
        answer = shared_single.broadcast(
            operator, room=room, event="command", data={"name": "reboot"}
        )
        assert answer.status_code == 202
        event = await device.next_event()
        assert event["room"] == room
        assert event["event"] == "command"
        assert event["data"] == {"name": "reboot"}
        assert isinstance(event["ts"], int)
    await device.close()


async def test_ping_gets_pong_with_the_same_ref(shared_single: HubNode) -> None:
    client = await Client.connect(shared_single, token("dashboard", "d1", "frames-ping"))
    await client.send({"op": "ping", "ref": "abc"})
    pong = await client.recv()
    assert pong == {"type": "pong", "ref": "abc", "time": pong["time"]}
    assert isinstance(pong["time"], int)
    await client.close()


async def test_subscribe_ack_then_events_then_unsubscribe_stops_them(
    shared_single: HubNode,
) -> None:
    tenant = "frames-unsubscribe"
    dashboard = await Client.connect(shared_single, token("dashboard", "d1", tenant))
    ack = await dashboard.subscribe("location:lobby")
    assert ack["room"] == "location:lobby"
    assert ack["recovered"] is False
    operator = token("operator", "o1", tenant)
    shared_single.broadcast(operator, room="location:lobby", event="alert", data=_alert("one"))
    assert (await dashboard.next_event())["data"]["message"] == "one"
    assert (await dashboard.request("unsubscribe", room="location:lobby"))["type"] == "ack"
    shared_single.broadcast(operator, room="location:lobby", event="alert", data=_alert("two"))
    await dashboard.no_event()
    await dashboard.close()


async def test_publish_over_the_socket_with_a_publish_claim(shared_single: HubNode) -> None:
    tenant = "frames-publish"
    publisher = await Client.connect(
        shared_single, token("dashboard", "d1", tenant, publish=["location:*"])
    )
    listener = await Client.connect(shared_single, token("dashboard", "d2", tenant))
    await listener.subscribe("location:lobby")
    answer = await publisher.request(
        "publish", room="location:lobby", event="x.note", data={"free": ["form", 1]}
    )
    assert answer["type"] == "ack"
    assert isinstance(answer["ts"], int)
    event = await listener.next_event()
    assert event["event"] == "x.note"
    assert event["data"] == {"free": ["form", 1]}
    await publisher.close()
    await listener.close()


async def test_malformed_frames_get_bad_request_and_the_socket_lives(refusing: HubNode) -> None:
    client = await Client.connect(refusing, token("dashboard", "d1", "frames-malformed"))
    for text in ["not json", "[1, 2]", '{"ref": 1}', '{"op": "subscribe", "ref": 2}']:
        await client.ws.send(text)
        answer = await client.recv()
        assert answer["type"] == "error"
        assert answer["code"] == "bad_request"
        assert answer["message"]
    assert (await client.request("ping"))["type"] == "pong"
    await client.close()


async def test_each_error_code_over_the_socket(hub_node: NodeFactory) -> None:
    node = hub_node("errors", max_event_bytes=400)
    device = await Client.connect(node, token("device", "p1", publish=["devices"]))
    dashboard = await Client.connect(node, token("dashboard", "d1", rooms=["location:*"]))

    bad = await dashboard.request("subscribe", room="bad room!")
    assert (bad["code"], bad["ref"]) == ("bad_request", 1)
    assert (await dashboard.request("subscribe", room="group:g1"))["code"] == "forbidden"
    assert (await device.request("subscribe", room="status"))["code"] == "forbidden"
    assert (await device.request("subscribe", room="device:other"))["code"] == "forbidden"
    assert (await dashboard.request("frobnicate"))["code"] == "not_found"
    unknown = await device.request("publish", room="devices", event="no.such", data={})
    assert unknown["code"] == "not_found"
    typed = await device.request("publish", room="devices", event="content.update", data={})
    assert typed["code"] == "bad_request"
    assert "data.content_id" in typed["message"]
    hub_only = {"device": "p1", "node": "n"}
    online = await device.request("publish", room="devices", event="device.online", data=hub_only)
    assert online["code"] == "forbidden"
    no_right = await dashboard.request("publish", room="location:a", event="x.a", data={})
    assert no_right["code"] == "forbidden"
    big = await device.request("publish", room="devices", event="x.big", data={"b": "x" * 500})
    assert big["code"] == "too_large"
    assert (await device.request("ping"))["type"] == "pong"
    await device.close()
    await dashboard.close()


async def test_frames_over_the_rate_get_rate_limited_then_a_flood_closes_4029(
    hub_node: NodeFactory,
) -> None:
    node = hub_node("limits", client_rate=5, client_burst=5)
    client = await Client.connect(node, token("dashboard", "d1"))
    for ref in range(5):
        await client.send({"op": "ping", "ref": ref})
    for ref in range(5):
        assert await client.recv() == {"type": "pong", "ref": ref, "time": ANY}
    await client.send({"op": "ping", "ref": "over"})
    assert await client.recv() == {
        "type": "error",
        "ref": "over",
        "code": "rate_limited",
        "message": "too many frames, slow down",
    }
    for ref in range(20):
        await client.send({"op": "ping", "ref": ref})
    assert await client.closed_with() == 4029


async def test_binary_frame_closes_1003(refusing: HubNode) -> None:
    client = await Client.connect(refusing, token("dashboard", "d1", "frames-binary"))
    await client.ws.send(b"\x00\x01")
    assert await client.closed_with() == 1003


async def test_frame_over_the_limit_closes_1009(small_frames: HubNode) -> None:
    client = await Client.connect(small_frames, token("dashboard", "d1", "frames-over"))
    await client.ws.send(orjson.dumps({"op": "ping", "ref": "x" * 4096}).decode())
    assert await client.closed_with() == 1009


async def test_frame_within_the_limit_is_answered(small_frames: HubNode) -> None:
    client = await Client.connect(small_frames, token("dashboard", "d1", "frames-within"))
    await client.send({"op": "ping", "ref": "x" * 1500})
    assert (await client.recv())["type"] == "pong"
    await client.close()


async def test_token_expiring_during_the_session_closes_1008(shared_single: HubNode) -> None:
    client = await Client.connect(shared_single, token("dashboard", "d1", "frames-expiring", ttl=2))
    started = time.monotonic()
    assert await client.closed_with(timeout=10) == 1008
    assert time.monotonic() - started < 8


def _alert(message: str) -> dict[str, str]:
    return {"level": "info", "message": message}
