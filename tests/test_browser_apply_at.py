"""A video wall in a real Chromium: three screens of one location, each a page running the
browser client, play a broadcast with `apply_at` together, at that moment of the hub's
clock, though one screen's clock is half a minute fast and another is an older engine
running /client.legacy.js. How far apart they played is recorded, not asserted: a test
machine's timers say little about a screen's."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from playwright.async_api import BrowserContext, Page

from hub.apply import wall_ms
from tests.browser import CLASSIC, MODULE, OLD_ENGINE, errors_of
from tests.support import HubNode, token

OPERATOR = token("operator", "back-office")
AHEAD = 2000
"""Ms ahead of now that the wall is to play the broadcast."""
EARLY = 25.0
"""Ms a screen may play before `apply_at`: the clock's error on loopback, and timers."""
CORRECTED = 1000.0
"""Ms the clock's estimated offset may be off and still show the skew corrected (it is 30 s):
how late a screen plays is recorded, never asserted (a shared machine is slow at times)."""
FAST = 30_000
"""Ms that one screen's clock is ahead of the hub's."""

FAST_CLOCK = f"""(() => {{
  const now = Date.now;
  Date.now = () => now.call(Date) + {FAST};
}})()"""
"""A screen whose clock is half a minute fast, as far as the client can tell."""

PLAYER = """async ({urls, token, bundle}) => {
  const { HubClient } = bundle === "module" ? await import("/client.js") : window.Hub;
  window.played = [];
  window.player = new HubClient(urls, token, {
    backoff: { base: 0.05, cap: 0.5 },
    onEvent: (event) => {
      window.played.push({ event: event.event, applyAt: event.apply_at ?? null,
                           state: event.state === true,
                           at: performance.timeOrigin + performance.now() });
    },
  });
  window.player.start();
  await window.player.whenConnected();
}"""
"""A screen's player: it notes when (by the machine's clock, which is the hub's here, not by
`Date.now`) each event reached its handler."""


async def screen(
    context: BrowserContext, node: HubNode, name: str, bundle: str, fast: bool = False
) -> tuple[Page, list[str]]:
    """A page playing the wall's location as device `name`, and the errors it reports."""
    page = await context.new_page()
    errors = errors_of(page)
    if fast:
        await page.add_init_script(FAST_CLOCK)
    if bundle == CLASSIC:
        await page.add_init_script(OLD_ENGINE)
    await page.goto(node.url + "/healthz")
    if bundle == CLASSIC:
        await page.add_script_tag(url="/client.legacy.js")
    bearer = token("device", name, loc="wall")
    await page.evaluate(PLAYER, {"urls": [node.ws_url], "token": bearer, "bundle": bundle})
    return page, errors


async def test_a_video_wall_plays_a_broadcast_together_at_apply_at(
    single: HubNode, browser_context: BrowserContext
) -> None:
    screens = {
        "screen-1": await screen(browser_context, single, "screen-1", MODULE),
        "screen-2": await screen(browser_context, single, "screen-2", MODULE, fast=True),
        "screen-3": await screen(browser_context, single, "screen-3", CLASSIC),
    }
    apply_at = round(wall_ms() + AHEAD)
    answer = single.broadcast(
        OPERATOR,
        room="location:wall",
        event="content.update",
        data={"content_id": "wall-video-7"},
        apply_at=apply_at,
    )
    assert answer.status_code == 202, answer.text

    played: dict[str, float] = {}
    offsets: dict[str, float] = {}
    for name, (page, errors) in screens.items():
        await page.wait_for_function("() => window.played.length > 0", timeout=10_000)
        [event] = await page.evaluate("() => window.played")
        assert event == {**event, "event": "content.update", "applyAt": apply_at, "state": False}
        played[name] = event["at"]
        offsets[name] = await page.evaluate("() => window.player.hubTime() - Date.now()")
        await page.evaluate("() => window.player.stop()")
        assert errors == [], (name, errors)

    for name, at in played.items():
        assert at >= apply_at - EARLY, (name, at - apply_at)
    expected = {"screen-1": 0, "screen-2": -FAST, "screen-3": 0}
    for name, offset in offsets.items():
        assert abs(offset - expected[name]) < CORRECTED, (name, offset)
    spread = max(played.values()) - min(played.values())
    record(
        {
            "test": "video wall",
            "screens": len(played),
            "bundles": [MODULE, MODULE, CLASSIC],
            "spread_ms": round(spread, 3),
            "after_apply_at_ms": {name: round(at - apply_at, 3) for name, at in played.items()},
        }
    )


def record(measured: dict[str, Any]) -> None:
    """Print what was measured, and add it as a JSON line to $HUB_VIDEO_WALL_RECORD."""
    line = json.dumps(measured, sort_keys=True)
    print(f"video wall: {line}")
    target = os.environ.get("HUB_VIDEO_WALL_RECORD")
    if target:
        with Path(target).open("a") as out:
            out.write(line + "\n")
