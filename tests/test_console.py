"""The operators' console at /console, in a real Chromium against real nodes: the fleet
follows devices live, a broadcast from its form reaches a device and the device's receipt
comes back, refused tokens are said so, and a fleet of thousands loads and stays live."""

from __future__ import annotations

import asyncio
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import BrowserContext, Page, expect

from hub.backoff import Backoff
from hub.client import HubClient
from loadtest.processes import raise_file_limit
from loadtest.wire import RawSocket, open_many, open_socket
from tests.conftest import NodeFactory
from tests.support import Client, HubNode, eventually, token

SCREENSHOT = Path(__file__).parent.parent / "docs" / "console.png"
NO_FIGURE = "\u2013"
"""What the stats panel shows for a figure it does not have yet (an en dash)."""
FLEET = int(os.environ.get("CONSOLE_FLEET", "2000"))
"""Devices of the large-fleet test (one node takes up to `HUB_MAX_CONNECTIONS`, 18,000)."""


PLAYER = """async ({url, token, beat}) => {
  const { HubClient } = await import("/client.js");
  const client = new HubClient([url], token, { heartbeat: () => beat });
  client.start();
  await client.whenConnected();
}"""
"""A player page: the browser client with a device token, heartbeating `beat`."""


async def open_console(page: Page, node: HubNode, bearer: str) -> None:
    """Open the console with the token in the fragment; wait until it is listed and live."""
    await page.goto(f"{node.url}/console#token={bearer}")
    await expect(page.locator("#fleet")).to_have_attribute("data-state", "ready")
    await expect(page.locator("#link")).to_have_attribute("data-state", "live")
    assert page.url == f"{node.url}/console", "the token stays in the address bar"


def row(page: Page, sub: str) -> Any:
    return page.locator(f'#fleet-rows .row[data-sub="{sub}"]')


async def test_a_device_page_shows_up_online_and_goes_offline_when_closed(
    single: HubNode, page: Page, browser_context: BrowserContext
) -> None:
    await open_console(page, single, token("dashboard", "wall"))
    # A dashboard watches; the views it may not use say so, and ask the hub nothing.
    await expect(page.locator("#broadcast-message")).to_contain_text("operators and admins")
    await expect(page.locator("#bc-send")).to_be_disabled()
    await expect(page.locator("#stats-message")).to_contain_text("operators and admins")

    # The device is a player page of its own, on the browser client.
    device = await browser_context.new_page()
    errors: list[str] = []
    device.on("pageerror", lambda error: errors.append(str(error)))
    await device.goto(single.url + "/healthz")
    beat = {"status": "playing", "content": "c1", "cpu": 12.5, "temp": 41}
    bearer = token("device", "player-1", loc="lobby", groups=["north"])
    await device.evaluate(PLAYER, {"url": single.ws_url, "token": bearer, "beat": beat})
    player = row(page, "player-1")
    await expect(player).to_have_attribute("data-online", "true")
    await expect(player.locator(".loc")).to_have_text("lobby")
    await expect(player.locator(".status")).to_have_text("playing")
    await expect(player.locator(".cpu")).to_have_text("12.5 %")
    await expect(player.locator(".groups")).to_have_text("north")  # looked up: events carry none
    await expect(page.locator("#count-online")).to_have_text("1")

    await device.close()  # the player's tab is closed
    assert errors == []
    await expect(player).to_have_attribute("data-online", "false")
    await expect(player.locator(".since")).to_contain_text("closed")
    await expect(page.locator("#count-offline")).to_have_text("1")
    await expect(page.locator("#count-total")).to_have_text("1")
    await page.select_option("#filter-state", "online")
    await expect(player).to_have_count(0)


async def test_a_broadcast_from_the_form_reaches_a_device_and_its_receipt_comes_back(
    single: HubNode, page: Page
) -> None:
    operator = token("operator", "ops")
    answer = single.broadcast(
        operator, room="location:lobby", event="content.update", data={"content_id": "spring"}
    )
    assert answer.status_code == 202, answer.text
    # A small fleet to look at: two players that answer commands, two that only
    # heartbeat, two that have gone.
    commands: list[dict[str, Any]] = []
    players = [
        HubClient(
            [single.ws_url],
            token("device", f"lobby-{n}", loc="lobby", groups=["portrait"]),
            on_event=lambda event: commands.append(event) if event["event"] == "command" else None,
            heartbeat=lambda: {"status": "playing", "content": "spring", "cpu": 23.5, "temp": 48.0},
            acknowledge_commands=True,
            backoff=Backoff(base=0.05, cap=0.5),
        )
        for n in (1, 2)
    ]
    runs = [asyncio.create_task(player.run()) for player in players]
    others = []
    for sub, loc, group, status in [
        ("cafe-1", "cafe", "menu", "playing"),
        ("cafe-2", "cafe", "menu", "idle"),
        ("entrance-1", "entrance", "landscape", "playing"),
        ("checkout-1", "checkout", "landscape", "playing"),
    ]:
        other = await Client.connect(single, token("device", sub, loc=loc, groups=[group]))
        await other.send({"op": "heartbeat", "data": {"status": status, "cpu": 8.0, "temp": 39.5}})
        others.append(other)
    for gone in others[2:]:
        await gone.close()
    try:
        await asyncio.wait_for(asyncio.gather(*(p.connected.wait() for p in players)), 10)
        await page.set_viewport_size({"width": 1440, "height": 860})
        await open_console(page, single, operator)
        await expect(page.locator("#count-total")).to_have_text("6")
        await expect(page.locator("#count-online")).to_have_text("4")

        await page.fill("#events-input", "location:lobby")
        await page.click("#events-form button[type=submit]")
        await expect(page.locator("#events-list li.state")).to_have_count(1)  # its state

        await page.fill("#bc-rooms", "location:lobby")
        await page.select_option("#bc-event", "command")
        await page.fill("#broadcast-form input[name=name]", "reboot")
        await page.fill("#broadcast-form textarea[name=args]", '{"delay": 5}')
        await page.click("#bc-send")
        await expect(page.locator("#broadcast-result")).to_contain_text("202 accepted")
        shown = await page.locator("#broadcast-result code").inner_text()
        room, _, event_id = shown.partition(": ")
        assert room == "location:lobby", shown
        assert re.fullmatch(r"\d+-\d+", event_id), shown

        async def both_got_it() -> bool:
            return len(commands) == 2

        await eventually(both_got_it, 10, "both players to get the command")
        assert {c["id"] for c in commands} == {event_id}
        assert commands[0]["data"] == {"name": "reboot", "args": {"delay": 5}}
        tracked = page.locator(f'.tracked[data-id="{event_id}"]')
        for sub in ("lobby-1", "lobby-2"):
            await expect(tracked.locator(f'tr[data-sub="{sub}"]')).to_have_attribute(
                "data-status", "done"
            )
        await expect(tracked.locator(".receipt-counts")).to_contain_text("2 done")
        await expect(page.locator("#events-list li:not(.state) b")).to_have_text(["command"])
        await expect(page.locator("#stats-table")).to_be_visible()
        figures = page.locator("#stats-body tr")
        await expect(figures.nth(6)).not_to_contain_text(NO_FIGURE)  # messages in /s
        await page.screenshot(path=str(SCREENSHOT))
    finally:
        for player in players:
            await player.stop()
        await asyncio.gather(*runs, return_exceptions=True)
        for other in others[:2]:
            await other.close()


async def test_a_refused_or_expired_token_is_said_so(
    single: HubNode, browser_context: BrowserContext
) -> None:
    page = await browser_context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
    try:
        forged = token("operator", "ops", secret="another-secret-that-is-long-enough-too")
        await page.goto(f"{single.url}/console#token={forged}")
        notice = page.locator("#notice")
        await expect(notice).to_contain_text("The hub refused this token")
        await expect(notice).to_contain_text("Signature verification failed")
        await expect(page.locator("#login")).to_be_visible()
        await expect(page.locator("#console")).to_be_hidden()

        await page.fill("#login-token", token("operator", "ops", ttl=-60))
        await page.click("#login button[type=submit]")
        await expect(notice).to_contain_text("This token expired")

        await page.fill("#login-token", "not-a-token")
        await page.click("#login button[type=submit]")
        await expect(notice).to_contain_text("This is not a token")

        # A token that expires while the console is open ends the session, saying so.
        await page.fill("#login-token", token("operator", "ops", ttl=3))
        await page.click("#login button[type=submit]")
        await expect(page.locator("#link")).to_have_attribute("data-state", "live")
        await expect(notice).to_contain_text("This token expired", timeout=6000)
        await expect(page.locator("#login")).to_be_visible()
        await expect(page.locator("#link")).to_have_attribute("data-state", "off")
    finally:
        await page.close()
    # The browser logs the refused read itself (and, when the hub closed the expired
    # socket first, the client's refused reconnection); nothing else may go wrong.
    assert any("status of 401" in error for error in errors), errors
    assert all("401" in error for error in errors), errors


@pytest.fixture
def big(hub_node: NodeFactory) -> HubNode:
    """A node for thousands of devices that send no heartbeats for the test's length."""
    raise_file_limit()
    return hub_node("big", heartbeat_interval=300, heartbeat_timeout=600)


async def test_a_fleet_of_thousands_loads_and_stays_live(big: HubNode, page: Page) -> None:
    """Figures, not assertions on timing: printed for BENCHMARKS.md (run with -s)."""

    def device(i: int) -> str:
        return token("device", f"screen-{i:05d}", loc=f"site-{i % 50}", groups=[f"g{i % 7}"])

    sockets = await open_many(RawSocket, [big.port], range(FLEET), device, timeout=120)
    operator = token("operator", "ops")
    try:
        began = time.perf_counter()
        await page.goto(f"{big.url}/console#token={operator}")
        await page.wait_for_function(
            f"() => document.querySelector('#fleet').dataset.state === 'ready'"
            f" && document.querySelector('#count-total').textContent === '{FLEET:,}'",
            polling="raf",
            timeout=60_000,
        )
        listed = time.perf_counter() - began
        await expect(page.locator("#link")).to_have_attribute("data-state", "live")
        rows = await page.locator("#fleet-rows .row").count()
        assert rows < 100, f"{rows} rows in the DOM for {FLEET} devices: not virtualised"

        await page.fill("#filter-text", "screen-new")
        began = time.perf_counter()
        newcomer = await open_socket(
            RawSocket, big.port, token("device", "screen-new"), "127.0.0.1"
        )
        await newcomer.ready
        welcomed = time.perf_counter() - began
        await page.wait_for_function(
            "() => document.querySelector('#fleet-rows .row[data-sub=\"screen-new\"]')"
            "?.dataset.online === 'true'",
            polling="raf",
        )
        shown = time.perf_counter() - began

        burst = range(FLEET, FLEET + 1000)
        await page.fill("#filter-text", "")
        began = time.perf_counter()
        more = await open_many(RawSocket, [big.port], burst, device, timeout=60)
        opened = time.perf_counter() - began
        await page.wait_for_function(
            f"() => document.querySelector('#count-online').textContent === '{FLEET + 1001:,}'",
            polling="raf",
            timeout=60_000,
        )
        counted = time.perf_counter() - began
        sockets += more
        print(
            f"\nconsole, {FLEET:,} devices on one node: full listing {listed:.2f} s after"
            f" navigation; a device.online shown {shown * 1000:.0f} ms after connecting"
            f" (welcome at {welcomed * 1000:.0f} ms); 1,000 devices more online in"
            f" {counted:.2f} s (their sockets opened in {opened:.2f} s)"
        )
        newcomer.transport.close()
    finally:
        for sock in sockets:
            sock.transport.close()
