"""A room's current state (the contract's "Current state of a room"): kept with the
publish, handed over with every subscribe ack and a device's welcome, and read over REST,
on one node and across nodes through Redis."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hub.client import HubClient
from tests.conftest import NodeFactory, Start
from tests.support import Client, HubNode, RedisServer, eventually, metric, token

OPERATOR = token("operator", "o1")
DASHBOARD = token("dashboard", "d1")
ROOM = "location:lobby"


def content(node: HubNode, version: int, room: str = ROOM, operator: str = OPERATOR) -> str:
    answer = node.broadcast(
        operator, room=room, event="content.update", data={"content_id": "c", "version": version}
    )
    assert answer.status_code == 202, answer.text
    event_id: str = answer.json()["ids"][room]
    return event_id


def alert(node: HubNode, room: str = ROOM, operator: str = OPERATOR) -> None:
    answer = node.broadcast(
        operator, room=room, event="alert", data={"level": "info", "message": "hello"}
    )
    assert answer.status_code == 202, answer.text


def _last_id(events: list[dict[str, Any]]) -> str | None:
    return events[-1]["id"] if events else None


def state_of(node: HubNode, room: str = ROOM, bearer: str = DASHBOARD) -> list[dict[str, Any]]:
    answer = node.get(f"/v1/rooms/{room}/state", bearer)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["room"] == room
    events: list[dict[str, Any]] = body["events"]
    return events


async def test_the_newest_event_of_each_state_name_is_the_rooms_state(
    tenant_node: HubNode, tenant: str
) -> None:
    operator, dashboard = token("operator", "o1", tenant), token("dashboard", "d1", tenant)
    watcher = await Client.connect(tenant_node, dashboard)
    assert (await watcher.subscribe(ROOM))["state"] == []
    publishes = metric(tenant_node, "hub_state_publishes_total")
    content(tenant_node, 1, operator=operator)
    playlist = tenant_node.broadcast(
        operator, room=ROOM, event="playlist.update", data={"playlist_id": "p"}
    ).json()["ids"][ROOM]
    alert(tenant_node, operator=operator)  # not state
    newest = content(tenant_node, 2, operator=operator)
    delivered = {event["id"]: event for event in await watcher.events(lambda e: len(e) == 4, 5)}

    state = (await (await Client.connect(tenant_node, dashboard)).subscribe(ROOM))["state"]
    assert [event["id"] for event in state] == [playlist, newest]
    assert (
        metric(tenant_node, "hub_state_publishes_total") == publishes + 3
    )  # the alert is not state
    assert state == [delivered[playlist], delivered[newest]]  # exactly the frames delivered
    assert state_of(tenant_node, bearer=dashboard) == state
    assert state_of(tenant_node, "location:elsewhere", dashboard) == []


async def test_a_device_is_welcomed_with_the_state_of_its_rooms(
    tenant_node: HubNode, tenant: str
) -> None:
    operator = token("operator", "o1", tenant)
    first = content(tenant_node, 1, operator=operator)
    content(tenant_node, 2, room="group:screens", operator=operator)
    device_token = token("device", "p1", tenant, loc="lobby", groups=["screens"])
    device = await Client.connect(tenant_node, device_token)
    state = device.welcome["state"]
    assert [event["id"] for event in state[ROOM]] == [first]
    assert state["group:screens"][0]["data"]["version"] == 2
    assert "device:p1" not in state  # rooms without state may be left out
    later = content(tenant_node, 3, operator=operator)
    assert (await device.next_event())["id"] == later  # nothing after the snapshot is missed


async def test_state_outlives_history_and_a_resume_gets_it(start: Start) -> None:
    node = start(history_size=1)
    watcher = await Client.connect(node, DASHBOARD)
    ack = await watcher.subscribe(ROOM)
    kept = content(node, 1)
    for _ in range(3):
        alert(node)
    events = await watcher.events(lambda e: len(e) == 4, 5)
    resumed = await (await Client.connect(node, DASHBOARD)).subscribe(
        ROOM, since=events[0]["id"], epoch=ack["epoch"]
    )
    assert resumed["recovered"] is False  # history kept one event: two were dropped
    assert [event["id"] for event in resumed["state"]] == [kept]
    recovered = await (await Client.connect(node, DASHBOARD)).subscribe(
        ROOM, since=events[-1]["id"], epoch=ack["epoch"]
    )
    assert recovered["recovered"] is True
    assert [event["id"] for event in recovered["state"]] == [kept]  # on every ack


async def test_state_is_forgotten_after_its_ttl(start: Start) -> None:
    node = start(state_ttl=1)
    content(node, 1)
    assert len(state_of(node)) == 1
    await eventually(lambda: state_of(node) == [], 5, "the state to age out")


async def test_names_and_prefixes_name_state_and_rooms_without_history_keep_it(
    start: Start,
) -> None:
    node = start(state_events="x.screen.*,alert", history_rooms='{"live:": {"size": 0}}')
    layout = {"room": "live:wall", "event": "x.screen.layout", "data": {"grid": 4}}
    assert node.broadcast(OPERATOR, **layout).json()["ids"] == {"live:wall": None}
    alert(node, room="live:wall")
    content(node, 1, room="live:wall")  # no longer state here
    state = state_of(node, "live:wall")
    assert [event["event"] for event in state] == ["x.screen.layout", "alert"]
    assert "id" not in state[0]  # the room keeps no history: its events have no id


async def test_who_may_read_a_rooms_state(shared_single: HubNode, tenant: str) -> None:
    device = shared_single.get(f"/v1/rooms/{ROOM}/state", token("device", "p1", tenant))
    assert device.status_code == 403
    limited = token("dashboard", "d2", tenant, rooms=["group:*"])
    assert shared_single.get(f"/v1/rooms/{ROOM}/state", limited).status_code == 403
    content(shared_single, 1, operator=token("operator", "o1", tenant))
    admin = shared_single.get(
        f"/v1/rooms/{ROOM}/state", token("admin", "root", None), tenant=tenant
    )
    assert [event["event"] for event in admin.json()["events"]] == ["content.update"]
    dashboard = token("dashboard", "d1", tenant)
    assert shared_single.get("/v1/rooms/bad room/state", dashboard).status_code == 400


def test_a_hub_only_event_cannot_be_state(hub_node: NodeFactory) -> None:
    with pytest.raises(RuntimeError, match="not an event a client publishes"):
        hub_node("bad", state_events="device.online")


async def test_a_redis_that_lost_its_data_answers_no_state_and_not_recovered(
    hub_node: NodeFactory, redis_server: RedisServer
) -> None:
    a, b = hub_node("a", redis_server.url), hub_node("b", redis_server.url)
    content(a, 1)
    watcher = await Client.connect(b, DASHBOARD)
    ack = await watcher.subscribe(ROOM)
    assert len(ack["state"]) == 1
    redis_server.stop()
    redis_server.start()
    await eventually(lambda: a.ready() and b.ready(), 10, "both nodes back on Redis")
    resumed = await (await Client.connect(b, DASHBOARD)).subscribe(
        ROOM, since=ack["last"], epoch=ack["epoch"]
    )
    assert resumed["recovered"] is False
    assert resumed["epoch"] != ack["epoch"]
    assert resumed["state"] == []
    assert state_of(a) == []


async def test_no_state_event_published_during_subscribes_is_missed(
    pair: tuple[HubNode, HubNode],
) -> None:
    """A publisher on one node, subscribers joining on the other throughout: each one's
    newest state (from its ack or live after it) is the last event published."""
    a, b = pair
    publisher = await Client.connect(a, token("operator", "o2", publish=["*"]))
    stop = asyncio.Event()
    last: list[str] = []

    async def publish() -> None:
        version = 0
        while not stop.is_set():
            version += 1
            answer = await publisher.request(
                "publish",
                room=ROOM,
                event="content.update",
                data={"content_id": "c", "version": version},
            )
            assert answer["type"] == "ack", answer
            last.append(answer["id"])
            await asyncio.sleep(0.025)  # within the socket's frame rate

    async def join() -> Client:
        client = await Client.connect(b, DASHBOARD)
        client.welcome["ack"] = await client.subscribe(ROOM)
        return client

    publishing = asyncio.create_task(publish())
    joined = []
    for _ in range(10):
        joined.append(await join())
        await asyncio.sleep(0.02)
    stop.set()
    await publishing
    newest = last[-1]
    for client in joined:
        state = [event["id"] for event in client.welcome["ack"]["state"]]
        seen = list(state)
        if seen[-1:] != [newest]:
            live = await client.events(lambda events: _last_id(events) == newest, 10)
            seen += [event["id"] for event in live]
        # From its state on, every later publish once and in order: none missed, none twice.
        assert seen == last[last.index(state[0]) if state else 0 :], (state, seen, last)


async def test_hub_client_hands_state_over_before_live_events(
    shared_single: HubNode, tenant: str
) -> None:
    """Without `on_state`, state events reach `on_event` flagged, once, before the rest."""
    operator = token("operator", "o1", tenant)
    first = content(shared_single, 1, operator=operator)
    seen: list[tuple[str, bool]] = []
    client = HubClient(
        [shared_single.ws_url],
        token("dashboard", "d1", tenant),
        rooms=[ROOM],
        on_event=lambda event: seen.append((event["id"], event.get("state", False))),
    )
    running = asyncio.create_task(client.run())
    try:
        await asyncio.wait_for(client.connected.wait(), 5)
        later = content(shared_single, 2, operator=operator)
        await eventually(lambda: len(seen) == 2, 5, "the live event")
        assert seen == [(first, True), (later, False)]
        await client.drop()  # a resume that recovers: the state is not handed over again
        await eventually(lambda: client.connected.is_set(), 5, "the resume")
        newest = content(shared_single, 3, operator=operator)
        await eventually(lambda: len(seen) == 3, 5, "the next live event")
        assert seen[-1] == (newest, False)
    finally:
        await client.stop()
        await running


async def test_hub_client_gives_on_state_the_state_of_every_subscribe(
    shared_single: HubNode, tenant: str
) -> None:
    first = content(shared_single, 1, operator=token("operator", "o1", tenant))
    states: list[tuple[str, list[str]]] = []
    client = HubClient(
        [shared_single.ws_url],
        token("device", "p1", tenant, loc="lobby"),
        on_state=lambda room, events: states.append((room, [e["id"] for e in events])),
    )
    running = asyncio.create_task(client.run())
    try:
        await asyncio.wait_for(client.connected.wait(), 5)
        assert (ROOM, [first]) in states
        assert ("devices", []) in states
    finally:
        await client.stop()
        await running
