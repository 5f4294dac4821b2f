"""The classic script for older screens, /client.legacy.js: built from today's client.js,
ECMAScript 2015 only, every export of the module under `window.Hub`, and the README's page
for such screens runs as written. The browser tests (tests/test_browser_client.py) run it
as an old engine would."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Page, expect

from tests.browser import OLD_ENGINE
from tests.conftest import NodeFactory
from tests.support import HubNode, token

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / "tests" / "web" / "node_modules" / ".bin"
README = (ROOT / "README.md").read_text()
OPERATOR = token("operator", "back-office")


def _tool(name: str) -> Path:
    """A tool tests/web/package-lock.json pins; missing, the test fails under CI."""
    path = TOOLS / name
    if not path.exists():
        message = f"{name} is not installed in tests/web (run scripts/install)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def test_the_served_script_is_what_the_build_makes_from_todays_client(
    refusing: HubNode, tmp_path: Path
) -> None:
    """A stale hub/web/client.legacy.js fails here: run scripts/build-clients."""
    _tool("esbuild")
    built = tmp_path / "client.legacy.js"
    subprocess.run([str(ROOT / "scripts" / "build-clients"), str(built)], check=True, timeout=60)
    served = httpx.get(f"{refusing.url}/client.legacy.js", headers={"Origin": "https://tv.example"})
    assert served.status_code == 200
    assert served.content == built.read_bytes(), "stale client.legacy.js: run scripts/build-clients"
    module = httpx.get(f"{refusing.url}/client.js")
    for header in ("content-type", "cache-control", "access-control-allow-origin"):
        assert served.headers[header] == module.headers[header], header
    types = httpx.get(f"{refusing.url}/client.legacy.d.ts")
    assert types.content == (ROOT / "hub" / "web" / "client.legacy.d.ts").read_bytes()


def test_the_served_script_is_ecmascript_2015(refusing: HubNode, tmp_path: Path) -> None:
    es_check = _tool("es-check")
    served = tmp_path / "client.legacy.js"
    served.write_bytes(httpx.get(f"{refusing.url}/client.legacy.js").content)
    subprocess.run([str(es_check), "es6", str(served)], check=True, timeout=60)


def test_the_global_is_declared_for_a_page_in_typescript(tmp_path: Path) -> None:
    tsc = _tool("tsc")
    page = tmp_path / "player.ts"
    types = ROOT / "hub" / "web" / "client.legacy.d.ts"
    page.write_text(
        f'/// <reference path="{types}" />\n'
        'const client = new window.Hub.HubClient([Hub.socketUrl()], "a-token", {\n'
        "  onError: (error) => {\n"
        "    if (error instanceof Hub.RoomRefused) console.warn(error.room, error.code);\n"
        "  },\n"
        "});\n"
        "client.start();\n"
    )
    checked = [str(tsc), "--strict", "--noEmit", "--target", "ES2022", "--lib", "ES2022,DOM"]
    subprocess.run([*checked, str(page)], check=True, timeout=120)


async def test_the_script_defines_every_export_of_the_module_under_window_hub(
    refusing: HubNode, page: Page
) -> None:
    """`socketUrl()` names the node the script came from, as the module's does."""
    await page.goto(refusing.url + "/healthz")
    exports = await page.evaluate("async () => Object.keys(await import('/client.js')).sort()")
    await page.add_script_tag(url="/client.legacy.js")
    names = await page.evaluate("() => Object.keys(window.Hub).sort()")
    assert names == exports
    assert "HubClient" in names
    assert await page.evaluate("() => Hub.socketUrl()") == refusing.ws_url
    made = """() => new Hub.HubClient(["ws://127.0.0.1:1/v1/ws"], "t") instanceof EventTarget"""
    assert await page.evaluate(made)


async def test_the_readmes_page_for_older_screens_runs_as_written_on_an_old_engine(
    hub_node: NodeFactory, page: Page
) -> None:
    """The page of README.md's "Older screens", served by the test node: the lobby's state
    first, then a new event, as an older screen's engine runs it (`OLD_ENGINE`)."""
    node = hub_node("solo")
    playlist = node.broadcast(
        OPERATOR, room="location:lobby", event="playlist.update", data={"playlist_id": "p1"}
    )
    assert playlist.status_code == 202, playlist.text
    section = README.split("\n### Older screens: /client.legacy.js\n", 1)[1]
    found = re.search(r"```html\n(.*?)```", section, flags=re.DOTALL)
    assert found is not None, "no html block under Older screens"
    html = found[1].replace("127.0.0.1:8000", node.url.removeprefix("http://"))
    await page.add_init_script(OLD_ENGINE)
    # A page of the node's own origin, a local one as a saved file is: Chromium blocks a page
    # it takes for a public one from dialling 127.0.0.1 (local network access).
    await page.goto(f"{node.url}/healthz#token={token('device', 'screen-9', loc='lobby')}")
    await page.set_content(html)
    shown = page.locator("#now")
    await expect(shown).to_have_text('playlist.update {"playlist_id":"p1"}')
    update = node.broadcast(
        OPERATOR, room="location:lobby", event="content.update", data={"content_id": "c1"}
    )
    assert update.status_code == 202, update.text
    await expect(shown).to_have_text('content.update {"content_id":"c1"}')
