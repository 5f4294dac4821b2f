"""Broadcasts that say what they reached, expire, and play together: `reach`, `ttl` and
`expires`, `apply_at`, and the hub's clock in `welcome` and `pong`."""

from __future__ import annotations

import asyncio
import time

import httpx
import orjson
import pytest

from hub import envelope
from tests.support import Client, HubNode, eventually, raw_broadcast, token

CONTENT = {"event": "content.update", "data": {"content_id": "c1"}}
REBOOT = {"event": "command", "data": {"name": "reboot"}}


def _refused(answer: httpx.Response, words: str) -> None:
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "bad_request"
    assert words in answer.json()["error"]["message"]


def _now() -> int:
    return int(time.time() * 1000)


async def test_reach_counts_the_rooms_members_across_the_cluster(
    tenant_pair: tuple[HubNode, HubNode], tenant: str
) -> None:
    """Two players of one location, one on each node, and a typo'd room nobody is in: the
    answer says so, and the zero is not an error."""
    a, b = tenant_pair
    operator = token("operator", "o1", tenant)
    players = [
        await Client.connect(node, token("device", f"p{n}", tenant, loc="lobby"))
        for n, node in enumerate((a, b))
    ]
    rooms = ["location:lobby", "lobby", "device:p0"]
    await eventually(
        lambda: len(a.presence("location:lobby", operator)) == 2, 10, "both players in presence"
    )
    answer = a.broadcast(operator, rooms=rooms, **CONTENT)
    assert answer.status_code == 202, answer.text
    assert answer.json()["reach"] == {"location:lobby": 2, "lobby": 0, "device:p0": 1}
    for player in players:
        await player.close()


async def test_an_idempotent_replay_answers_the_first_reach(
    tenant_node: HubNode, tenant: str
) -> None:
    operator = token("operator", "o1", tenant)
    player = await Client.connect(tenant_node, token("device", "p1", tenant))
    body = orjson.dumps({"room": "device:p1", **REBOOT})
    first = raw_broadcast(tenant_node, body, "reach-1", operator)
    await player.close()
    await eventually(
        lambda: tenant_node.presence("device:p1", operator) == [], 10, "the player gone"
    )
    again = raw_broadcast(tenant_node, body, "reach-1", operator)
    assert first.json()["reach"] == {"device:p1": 1}
    assert again.content == first.content, "the first reach, not the room's now"
    assert again.headers["Idempotent-Replayed"] == "true"


async def test_an_expired_event_is_neither_replayed_nor_history_nor_state(
    tenant_node: HubNode, tenant: str
) -> None:
    """A reboot with a ttl of 1 s, and content that is state: a player that was off
    through both finds neither when it comes back; the event it does find has no ttl."""
    operator = token("operator", "o1", tenant)
    player = await Client.connect(tenant_node, token("device", "p1", tenant, loc="lobby"))
    epoch = (await player.subscribe("device:p1"))["epoch"]
    sent = tenant_node.broadcast(operator, room="device:p1", ttl=1, **REBOOT)
    assert sent.status_code == 202, sent.text
    event = await player.next_event()
    assert event["expires"] == sent.json()["ts"] + 1000
    assert (
        envelope.expires_of(envelope.encode("r", "x", {}, 1, None, event["expires"]))
        == (event["expires"])
    )
    since = event["id"]
    await player.close()
    state = tenant_node.broadcast(operator, room="location:lobby", ttl=1, **CONTENT)
    assert state.status_code == 202, state.text
    kept = tenant_node.broadcast(operator, room="device:p1", **REBOOT)
    await asyncio.sleep(1.2)
    back = await Client.connect(tenant_node, token("device", "p1", tenant, loc="lobby"))
    assert back.welcome["state"].get("location:lobby", []) == []
    await back.send(
        {"op": "subscribe", "ref": 1, "room": "device:p1", "since": since, "epoch": epoch}
    )
    [replayed, answer] = [await back.recv(), await back.recv()]
    assert (answer["type"], answer["recovered"]) == ("ack", True)
    assert replayed["id"] == kept.json()["ids"]["device:p1"]
    assert "expires" not in replayed
    await back.no_event(0.3)
    history = httpx.get(
        f"{tenant_node.url}/v1/rooms/device:p1/history",
        headers={"Authorization": f"Bearer {operator}"},
    ).json()
    assert [e["id"] for e in history["events"]] == [replayed["id"]]
    state_now = httpx.get(
        f"{tenant_node.url}/v1/rooms/location:lobby/state",
        headers={"Authorization": f"Bearer {operator}"},
    ).json()
    assert state_now["events"] == []
    await back.close()


async def test_apply_at_and_ttl_travel_in_the_event_and_are_bounded(
    shared_single: HubNode,
) -> None:
    operator = token("operator", "o1")
    player = await Client.connect(shared_single, token("device", "p1"))
    assert abs(player.welcome["time"] - _now()) < 60_000
    pong = await player.request("ping")
    assert pong["time"] >= player.welcome["time"]
    at = _now() + 2000
    sent = shared_single.broadcast(operator, room="device:p1", apply_at=at, ttl=60, **REBOOT)
    assert sent.status_code == 202, sent.text
    event = await player.next_event()
    assert (event["apply_at"], event["expires"]) == (at, sent.json()["ts"] + 60_000)
    assert list(event)[-4:] == ["apply_at", "expires", "ts", "id"]
    _refused(
        shared_single.broadcast(operator, room="device:p1", apply_at=_now() + 90_000_000, **REBOOT),
        "apply_at must be at most 24 h ahead",
    )
    _refused(
        shared_single.broadcast(operator, room="device:p1", ttl=10**9, **REBOOT),
        "ttl must be at most the history TTL of device:p1",
    )
    for ttl in (0, -5, 1.5, "60", True, None):
        _refused(
            shared_single.broadcast(operator, room="device:p1", ttl=ttl, **REBOOT),
            "ttl must be a whole number of seconds",
        )
    for apply_at in (-1, "soon", 1.5, False):
        _refused(
            shared_single.broadcast(operator, room="device:p1", apply_at=apply_at, **REBOOT),
            "apply_at must be a time in ms",
        )
    await player.no_event(0.2)
    await player.close()


async def test_a_publish_frame_may_carry_a_ttl_and_apply_at(shared_single: HubNode) -> None:
    dashboard = await Client.connect(
        shared_single, token("dashboard", "d1", "timing-frames", publish=["x:*"])
    )
    await dashboard.subscribe("x:wall")
    at = _now() + 1000
    cue = {"op": "publish", "ref": "cue", "room": "x:wall", "event": "x.cue", "data": {}}
    await dashboard.send({**cue, "ttl": 5, "apply_at": at})
    frames = {frame["type"]: frame for frame in [await dashboard.recv(), await dashboard.recv()]}
    ack, event = frames["ack"], frames["event"]
    assert (event["apply_at"], event["expires"]) == (at, ack["ts"] + 5000)
    refused = await dashboard.request("publish", room="x:wall", event="x.cue", data={}, ttl="5")
    assert refused["type"] == "error"
    assert refused["code"] == "bad_request"
    await dashboard.close()


HOSTILE = [
    ('"ttl":1e400', "not valid JSON"),
    ('"ttl":18446744073709551616', "ttl must be at most the history TTL"),
    ('"ttl":5,"ttl":-1', "ttl must be a whole number"),
    ('"ttl":0.5', "ttl must be a whole number"),
    ('"ttl":"60"', "ttl must be a whole number"),
    ('"apply_at":1e300', "apply_at must be at most 24 h ahead"),
    ('"apply_at":-1', "apply_at must be a time in ms"),
    ('"apply_at":null', "apply_at must be a time in ms"),
]
"""Timings as raw JSON that no client library writes, and what each is refused with."""


@pytest.mark.parametrize(("fields", "words"), HOSTILE)
async def test_a_hostile_timing_is_refused_raw_on_a_socket_and_over_rest_and_publishes_nothing(
    shared_single: HubNode, fields: str, words: str
) -> None:
    tenant = "timing-hostile"
    watcher = await Client.connect(shared_single, token("dashboard", "d1", tenant, publish=["x:*"]))
    await watcher.subscribe("x:wall")
    await watcher.ws.send(
        '{"op":"publish","ref":1,"room":"x:wall","event":"x.cue","data":{},' + fields + "}"
    )
    refused = await watcher.recv()
    assert (refused["type"], refused["code"]) == ("error", "bad_request"), refused
    assert words in refused["message"]
    body = '{"room":"x:wall","event":"x.cue","data":{},' + fields + "}"
    _refused(
        raw_broadcast(shared_single, body.encode(), bearer=token("operator", "o", tenant)), words
    )
    await watcher.no_event(0.3)
    await watcher.close()


async def test_an_apply_at_more_than_a_day_ahead_is_refused_in_a_publish_frame(
    shared_single: HubNode,
) -> None:
    publisher = await Client.connect(
        shared_single, token("dashboard", "d1", "timing-ahead", publish=["x:*"])
    )
    at = _now() + 25 * 3_600_000
    answer = await publisher.request("publish", room="x:wall", event="x.cue", data={}, apply_at=at)
    assert (answer["type"], answer["code"]) == ("error", "bad_request"), answer
    assert "apply_at must be at most 24 h ahead" in answer["message"]
    await publisher.close()
