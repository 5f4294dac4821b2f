"""The browser client, /client.js, in a real Chromium against real nodes: nothing lost or
repeated across a node's death, heartbeats that make a device online, state before
events, command receipts, and refusals reported instead of retried for ever. Each of those
runs twice: with the module, and with the classic script for older screens,
/client.legacy.js, in a page without what their engines lack."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import pytest
from playwright.async_api import BrowserContext, Page

from tests.browser import CLASSIC, MODULE, errors_of, record, start_client
from tests.conftest import NodeFactory
from tests.support import (
    HubNode,
    RedisServer,
    eventually,
    free_port,
    publish_numbered,
    token,
)

OPERATOR = token("operator", "back-office")
EVENTS = 120


@pytest.fixture(params=[MODULE, CLASSIC])
def bundle(request: pytest.FixtureRequest) -> str:
    """Which client a test's pages load: the module, or the classic script as an older
    screen runs it."""
    which: str = request.param
    return which


def devices(node: HubNode) -> dict[str, dict[str, Any]]:
    answer = node.get("/v1/devices", OPERATOR)
    assert answer.status_code == 200, answer.text
    return {device["sub"]: device for device in answer.json()["devices"]}


async def test_a_page_keeps_every_event_once_in_order_while_its_node_is_killed(
    hub_node: NodeFactory, redis_server: RedisServer, page: Page, bundle: str
) -> None:
    a = hub_node("a", redis_server.url, broadcast_rate=0)
    b = hub_node("b", redis_server.url, broadcast_rate=0)
    wall = token("dashboard", "wall")
    await start_client(page, a, [a.ws_url, b.ws_url], wall, bundle, rooms=["feed"])

    published: list[str] = []
    publishing = asyncio.create_task(publish_numbered(b.url, "feed", EVENTS, published))
    await eventually(lambda: len(published) >= EVENTS // 3, 20, "a third of the events")
    await asyncio.to_thread(a.stop, signal.SIGKILL)
    await publishing

    await page.wait_for_function("n => window.clients[0].record.ids.length >= n", arg=EVENTS)
    seen = await record(page)
    assert seen["ids"] == published
    assert seen["lost"] == []
    assert seen["nodes"] == ["a", "b"]


async def test_a_device_page_heartbeats_online_and_goes_offline_when_closed(
    hub_node: NodeFactory, page: Page, bundle: str
) -> None:
    # The token expires within the refresh notice: `expiring` comes right after the welcome.
    node = hub_node("solo", heartbeat_interval=1, heartbeat_timeout=5, refresh_notice=3600)
    device = token("device", "screen-1", loc="lobby", ttl=600)
    fresh = token("device", "screen-1", loc="lobby", ttl=7200)
    await start_client(
        page, node, [node.ws_url], device, bundle, beats=True, provider=True, later=[fresh]
    )

    def beating() -> bool:
        listed = devices(node).get("screen-1", {})
        heartbeat = listed.get("heartbeat") or {}
        return listed.get("online") is True and heartbeat.get("uptime", 0) >= 2

    await eventually(beating, 10, "screen-1 online with its second heartbeat")
    assert devices(node)["screen-1"]["heartbeat"]["status"] == "playing"
    seen = await record(page)
    assert seen["tokens"] == 2  # the connection's, then the refresh's over the same socket
    assert seen["retries"] == 0
    assert seen["warnings"] == []
    assert devices(node)["screen-1"]["loc"] == "lobby"

    await page.close()
    await eventually(lambda: not devices(node)["screen-1"]["online"], 10, "screen-1 offline")
    assert devices(node)["screen-1"]["offline_reason"] == "closed"


async def test_state_comes_first_and_commands_are_acknowledged(
    hub_node: NodeFactory, page: Page, bundle: str
) -> None:
    node = hub_node("solo")
    playlist = node.broadcast(
        OPERATOR, room="location:lobby", event="playlist.update", data={"playlist_id": "morning"}
    )
    assert playlist.status_code == 202, playlist.text
    state_id = playlist.json()["ids"]["location:lobby"]

    # A player: the lobby's state as its first event; the `status` room is not a device's.
    device = token("device", "screen-2", loc="lobby")
    await start_client(
        page, node, [node.ws_url], device, bundle, rooms=["status"], acknowledgeCommands=True
    )
    # A dashboard with `onState`: the state apart, before any event of the room.
    await start_client(
        page,
        node,
        [node.ws_url],
        token("dashboard", "wall"),
        bundle,
        rooms=["location:lobby"],
        withState=True,
    )
    player = await record(page, 0)
    assert player["events"] == [{"event": "playlist.update", "id": state_id, "state": True}]
    assert player["errors"] == [{"name": "RoomRefused", "room": "status", "code": "forbidden"}]
    assert (await record(page, 1))["states"] == [{"room": "location:lobby", "ids": [state_id]}]

    command = node.broadcast(
        OPERATOR, room="device:screen-2", event="command", data={"name": "reboot"}
    )
    assert command.status_code == 202, command.text
    command_id = command.json()["ids"]["device:screen-2"]

    def done() -> bool:
        answer = node.get(f"/v1/rooms/device:screen-2/events/{command_id}/receipts", OPERATOR)
        receipts = answer.json()["receipts"]
        return [(r["sub"], r["status"]) for r in receipts] == [("screen-2", "done")]

    await eventually(done, 10, "the command's done receipt")
    update = node.broadcast(
        OPERATOR, room="location:lobby", event="content.update", data={"content_id": "c1"}
    )
    update_id = update.json()["ids"]["location:lobby"]
    await page.wait_for_function("() => window.clients[1].record.ids.length >= 1")
    assert (await record(page, 1))["ids"] == [update_id]
    await page.wait_for_function("() => window.clients[0].record.ids.length >= 3")
    assert (await record(page, 0))["ids"] == [state_id, command_id, update_id]


async def test_a_refused_token_is_reported_and_an_unreachable_node_is_retried(
    hub_node: NodeFactory, browser_context: BrowserContext, bundle: str
) -> None:
    """A browser cannot read a refused handshake's status: the client asks the node
    (`GET /v1/ws` without an upgrade) and stops at its 401, with the hub's code. A node
    that is not there is retried however long it takes."""
    node = hub_node("solo")
    page = await browser_context.new_page()
    errors = errors_of(page)
    try:
        forged = token("device", "screen-3", secret="another-secret-that-is-long-enough")
        await start_client(page, node, [node.ws_url], forged, bundle, wait=False)
        await page.wait_for_function("() => window.clients[0].record.refused !== null")
        refused = (await record(page, 0))["refused"]
        assert (refused["name"], refused["status"], refused["code"]) == (
            "HubRefused",
            401,
            "unauthorized",
        )
        assert "Signature verification failed" in refused["message"]

        gone = f"ws://127.0.0.1:{free_port()}/v1/ws"
        await start_client(page, node, [gone], token("device", "screen-4"), bundle, wait=False)
        await page.wait_for_function("() => window.clients[1].record.retries >= 5")
        assert (await record(page, 1))["refused"] is None
        await page.evaluate("() => window.clients[1].client.stop()")

        wrong = f"ws://127.0.0.1:{node.port}/"  # no socket there: the hub's is /v1/ws
        await start_client(page, node, [wrong], token("device", "screen-5"), bundle, wait=False)
        await page.wait_for_function("() => window.clients[2].record.refused !== null")
        assert (await record(page, 2))["refused"]["status"] == 404
    finally:
        await page.close()
    assert errors == []


async def test_a_page_with_more_rooms_than_the_frame_burst_subscribes_them_at_the_hubs_pace(
    hub_node: NodeFactory, page: Page
) -> None:
    """Past the hub's burst the page waits its turn instead of being refused and closed
    (4029) on every try."""
    node = hub_node("paced", client_rate=50, client_burst=20)
    rooms = [f"location:r{n}" for n in range(120)]
    await start_client(page, node, [node.ws_url], token("dashboard", "wall"), rooms=rooms)
    answer = node.broadcast(OPERATOR, room=rooms[-1], event="x.n", data={})
    assert answer.status_code == 202, answer.text
    await page.wait_for_function("() => window.clients[0].record.ids.length === 1")
    seen = await record(page)
    assert (seen["retries"], seen["warnings"], seen["nodes"]) == (0, [], ["paced"])
