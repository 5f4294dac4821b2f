"""Screens behind a proxy that refuses WebSocket upgrades: HAProxy as the network's forward
proxy (CONNECT and upgrades denied) in front of two nodes and Redis, and the Python client
going through it as a player would. It falls back to the event stream, loses nothing while
the node holding its stream is killed, stays online by its heartbeats, answers a command
with its receipts, and goes back to a WebSocket once one opens."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.async_api import Browser

from hub.backoff import Backoff
from hub.client import HubClient
from hub.protocol import Transport
from tests.browser import CLASSIC, MODULE, errors_of, record, start_client
from tests.conftest import NodeFactory
from tests.support import (
    HubNode,
    RedisServer,
    UpgradeRefusingProxy,
    eventually,
    publish_numbered,
    token,
)

PROXY_VARIABLES = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy")


@pytest.fixture
def behind(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Sets this process's HTTP proxy, as a network's settings would for a player."""

    def use(proxy: UpgradeRefusingProxy | None) -> None:
        for name in (*PROXY_VARIABLES, "no_proxy", "NO_PROXY"):
            monkeypatch.delenv(name, raising=False)
        if proxy is not None:
            monkeypatch.setenv("http_proxy", proxy.url)

    yield use
    use(None)


def _device(node: HubNode, sub: str, tenant: str, **options: Any) -> tuple[HubClient, list[Any]]:
    seen: list[Any] = []
    client = HubClient(
        [node.ws_url],
        token("device", sub, tenant, loc="lobby"),
        on_event=lambda event: seen.append(event),
        backoff=Backoff(base=0.05, cap=0.5),
        **options,
    )
    return client, seen


async def test_the_client_falls_back_behind_the_proxy_and_loses_nothing_when_its_node_dies(
    redis_server: RedisServer, hub_node: NodeFactory, behind: Any, tenant: str
) -> None:
    a = hub_node("a", redis_server.url)
    b = hub_node("b", redis_server.url)
    proxy = UpgradeRefusingProxy([a, b])
    proxy.start()
    behind(proxy)
    client, seen = _device(a, "p1", tenant, acknowledge_commands=True)
    running = asyncio.create_task(client.run())
    try:
        await asyncio.wait_for(client.connected.wait(), 20)
        assert client.transport is Transport.STREAM
        assert client.welcome is not None
        holder = a if client.welcome["node"] == a.name else b
        survivor = b if holder is a else a
        operator = token("operator", "o1", tenant)
        device_room = "device:p1"

        published: list[str] = []
        publishing = asyncio.create_task(
            publish_numbered(survivor.url, device_room, 60, published, tenant=tenant)
        )
        await eventually(lambda: len(published) >= 20, 20, "some events published")
        holder.stop(signal.SIGKILL)
        await publishing
        try:
            await eventually(
                lambda: [e["id"] for e in seen if e["room"] == device_room] == published,
                30,
                "every event once and in order across the kill",
            )
        except TimeoutError:
            got = [e["id"] for e in seen if e["room"] == device_room]
            raise AssertionError(f"published {published}\nseen {got}") from None
        assert client.transport is Transport.STREAM

        online = survivor.get("/v1/devices", operator, online="true").json()
        assert [device["sub"] for device in online["devices"]] == ["p1"]

        sent = survivor.broadcast(
            operator, room=device_room, event="command", data={"name": "reboot"}
        )
        event_id = sent.json()["ids"][device_room]

        def done() -> bool:
            answer = survivor.get(f"/v1/rooms/{device_room}/events/{event_id}/receipts", operator)
            return [r["status"] for r in answer.json()["receipts"]] == ["done"]

        await eventually(done, 20, "the command's receipt")
    finally:
        await client.stop()
        await asyncio.gather(running, return_exceptions=True)
        proxy.stop()


async def test_the_client_goes_back_to_a_websocket_once_one_opens(
    shared_single: HubNode, behind: Any, tenant: str
) -> None:
    proxy = UpgradeRefusingProxy([shared_single])
    proxy.start()
    behind(proxy)
    client, seen = _device(shared_single, "p2", tenant, websocket_retry=0.5)
    running = asyncio.create_task(client.run())
    try:
        await asyncio.wait_for(client.connected.wait(), 20)
        assert client.transport is Transport.STREAM
        published: list[str] = []
        await publish_numbered(shared_single.url, "device:p2", 5, published, tenant=tenant)
        behind(None)  # the screen moved to a network that lets WebSockets through
        await eventually(lambda: client.transport is Transport.WEBSOCKET, 20, "a socket again")
        await publish_numbered(shared_single.url, "device:p2", 5, published, tenant=tenant)
        await eventually(
            lambda: [e["id"] for e in seen] == published, 20, "every event once, in order"
        )
    finally:
        await client.stop()
        await asyncio.gather(running, return_exceptions=True)
        proxy.stop()


@pytest.mark.parametrize("bundle", [MODULE, CLASSIC])
async def test_a_player_page_falls_back_behind_the_proxy_and_loses_nothing(
    redis_server: RedisServer,
    hub_node: NodeFactory,
    browser: Browser,
    tenant: str,
    bundle: str,
) -> None:
    """Chromium with the proxy as its own (loopback included), a player page on either
    client: it falls back to the event stream, gets every event once and in order while
    the node holding its stream is killed, stays online by its heartbeats, and a command
    gets its receipts."""
    a = hub_node("a", redis_server.url)
    b = hub_node("b", redis_server.url)
    proxy = UpgradeRefusingProxy([a, b])
    proxy.start()
    context = await browser.new_context(proxy={"server": proxy.url, "bypass": "<-loopback>"})
    page = await context.new_page()
    errors = errors_of(page)
    try:
        device = token("device", "screen-1", tenant, loc="lobby")
        await start_client(
            page, a, [a.ws_url], device, bundle, beats=True, acknowledgeCommands=True
        )
        assert await page.evaluate("() => window.clients[0].client.transport") == "stream"
        welcome = await page.evaluate("() => window.clients[0].client.welcome")
        holder, survivor = (a, b) if welcome["node"] == a.name else (b, a)

        published: list[str] = []
        room = "device:screen-1"
        publishing = asyncio.create_task(
            publish_numbered(survivor.url, room, 60, published, tenant=tenant)
        )
        await eventually(lambda: len(published) >= 20, 20, "some events published")
        await asyncio.to_thread(holder.stop, signal.SIGKILL)
        await publishing

        async def all_there() -> bool:
            ids = (await record(page))["ids"]
            return bool(ids == published)

        await eventually(all_there, 30, "every event once and in order across the kill")
        assert await page.evaluate("() => window.clients[0].client.transport") == "stream"

        operator = token("operator", "o1", tenant)
        online = survivor.get("/v1/devices", operator, online="true").json()
        assert [listed["sub"] for listed in online["devices"]] == ["screen-1"]
        sent = survivor.broadcast(operator, room=room, event="command", data={"name": "reboot"})
        event_id = sent.json()["ids"][room]

        def done() -> bool:
            answer = survivor.get(f"/v1/rooms/{room}/events/{event_id}/receipts", operator)
            return [r["status"] for r in answer.json()["receipts"]] == ["done"]

        await eventually(done, 20, "the command's receipt")
    finally:
        await context.close()
        proxy.stop()
    assert errors == []


async def test_a_player_page_goes_back_to_a_websocket_once_one_opens(
    shared_single: HubNode, browser: Browser, tenant: str
) -> None:
    """The page's client reaches the node through the refusing proxy, goes on over the
    event stream, and once the proxy lets WebSockets through it is back on a socket,
    every event still handed over once and in order."""
    proxy = UpgradeRefusingProxy([shared_single])
    proxy.start()
    context = await browser.new_context()
    page = await context.new_page()
    errors = errors_of(page)
    transport = "() => window.clients[0].client.transport"
    try:
        device = token("device", "screen-9", tenant)
        await start_client(page, shared_single, [proxy.ws_url], device, websocketRetry=300)
        assert await page.evaluate(transport) == "stream"
        published: list[str] = []
        await publish_numbered(shared_single.url, "device:screen-9", 5, published, tenant=tenant)
        proxy.stop()
        proxy = UpgradeRefusingProxy([shared_single], refusing=False, port=proxy.port)
        proxy.start()

        async def on_a_socket() -> bool:
            return bool(await page.evaluate(transport) == "websocket")

        await eventually(on_a_socket, 20, "the client back on a WebSocket")
        await publish_numbered(shared_single.url, "device:screen-9", 5, published, tenant=tenant)

        async def all_there() -> bool:
            return bool((await record(page))["ids"] == published)

        await eventually(all_there, 20, "every event once and in order across the switch")
    finally:
        await context.close()
        proxy.stop()
    assert errors == []
