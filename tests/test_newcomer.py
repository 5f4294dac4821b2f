"""What a newcomer trips on, answered plainly: a cross-origin page refused with the setting
that decides it, a socket opened on the wrong path told the right one, clients back within
seconds of a lone node's restart, and a changelog that names the version the code has."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import orjson
import pytest
from playwright.async_api import BrowserContext
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import hub
from hub.client import Event, HubClient
from hub.cors import Cors, Seldom
from tests.browser import errors_of
from tests.conftest import NodeFactory
from tests.support import HubNode, eventually, token

ROOT = Path(__file__).resolve().parent.parent
OPERATOR = token("operator", "o1")
LISTED = "https://ops.example.com"
HOSTILE = "https://evil.example"
RESTART_BOUND = 8.0
"""Seconds from a restarted node's readiness to its client's next event: a policy bound
(the client waits at most 5 s between tries after a 1012), far below the 30 s cap."""
DOWN = 4.0
"""Seconds a restarted node is away, as when a person or a process manager restarts it:
a backoff that went on doubling meanwhile could wait up to 16 s more, and up to its 30 s
cap after a longer pause."""


def _exchange(node: HubNode, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send one raw HTTP request, as any program may, and read the answer to its end."""
    with socket.create_connection(("127.0.0.1", node.port), timeout=10) as raw:
        raw.sendall(request)
        got = b""
        while chunk := raw.recv(65536):
            got += chunk
    head, _, body = got.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def _preflight(origin: str, method: str = "POST", path: str = "/v1/broadcast") -> bytes:
    return (
        f"OPTIONS {path} HTTP/1.1\r\nHost: hub\r\nOrigin: {origin}\r\n"
        f"Access-Control-Request-Method: {method}\r\n"
        "Access-Control-Request-Headers: authorization, content-type\r\n"
        "Connection: close\r\n\r\n"
    ).encode()


def _error(body: bytes) -> dict[str, str]:
    said: dict[str, dict[str, str]] = orjson.loads(body)
    assert list(said) == ["error"]
    return said["error"]


def _refusal_lines(node: HubNode) -> list[str]:
    return [line for line in node.output().splitlines() if "cross-origin preflight" in line]


async def test_a_preflight_from_an_unlisted_origin_says_which_setting_refuses_it(
    hub_node: NodeFactory,
) -> None:
    node = hub_node("cors", cors_origins=LISTED)
    status, headers, body = _exchange(node, _preflight(HOSTILE))
    assert status == 400
    assert headers["content-type"] == "application/json"
    assert "access-control-allow-origin" not in headers
    assert _error(body) == {
        "code": "bad_request",
        "message": f"origin {HOSTILE} is not in HUB_CORS_ORIGINS",
    }
    allowed, _, _ = _exchange(node, _preflight(LISTED))
    assert allowed == 200
    status, headers, body = _exchange(node, _preflight(LISTED, method="DELETE"))
    assert status == 400
    assert headers["access-control-allow-origin"] == LISTED
    assert _error(body)["message"] == "method DELETE is not allowed across origins (GET, POST)"

    async def told() -> bool:
        return len(_refusal_lines(node)) >= 1

    await eventually(told, 10, "the refusal in the log")
    [line] = _refusal_lines(node)
    assert f"from {HOSTILE}: origin {HOSTILE} is not in HUB_CORS_ORIGINS" in line


def test_a_flood_of_refused_preflights_is_a_line_now_and_then(hub_node: NodeFactory) -> None:
    node = hub_node("cors", cors_origins=LISTED)
    with socket.create_connection(("127.0.0.1", node.port), timeout=10) as raw:
        one = _preflight(HOSTILE).replace(b"Connection: close\r\n", b"")
        raw.sendall(one * 300 + _preflight(HOSTILE))
        got = b""
        while chunk := raw.recv(65536):
            got += chunk
    assert got.count(b"HTTP/1.1 400 ") == 301
    assert 1 <= len(_refusal_lines(node)) <= 2


def test_without_cors_origins_a_preflight_is_told_the_setting_is_empty(refusing: HubNode) -> None:
    status, headers, body = _exchange(
        refusing, _preflight(HOSTILE, method="GET", path="/v1/devices")
    )
    assert status == 400
    assert "access-control-allow-origin" not in headers
    assert _error(body) == {
        "code": "bad_request",
        "message": f"origin {HOSTILE} may not call this node: HUB_CORS_ORIGINS is empty, so "
        "no page of another origin may",
    }


@pytest.mark.parametrize("path", ["/", "/ws", "/v1/ws/", "/v1/stream"])
def test_an_upgrade_on_another_path_is_a_404_naming_the_sockets(
    refusing: HubNode, path: str
) -> None:
    upgrade = (
        f"GET {path}?token={OPERATOR} HTTP/1.1\r\nHost: hub\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    status, headers, body = _exchange(refusing, upgrade)
    assert status == 404
    assert headers["content-type"] == "application/json"
    assert _error(body) == {
        "code": "not_found",
        "message": f"no socket at {path}: the hub's socket is /v1/ws",
    }


def test_hub_listen_without_the_path_is_told_the_path(refusing: HubNode) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("HUB_")}
    env["HUB_TOKEN"] = token("dashboard", "d1")
    url = f"ws://127.0.0.1:{refusing.port}"
    result = subprocess.run(
        [sys.executable, "-m", "hub", "listen", "--room", "alerts", "--url", url],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "hub: refused: 404 no socket at /: the hub's socket is /v1/ws"
    ]


async def _page(_request: Request) -> Response:
    return JSONResponse({"ok": True})


async def _public(_request: Request) -> Response:
    return JSONResponse({"ok": True}, headers={"Access-Control-Allow-Origin": "*"})


async def test_an_answer_the_browser_hides_is_told_but_not_the_nodes_own_pages(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="hub.cors")
    routes = [Route("/v1/devices", _page), Route("/healthz", _public)]
    app = Starlette(routes=routes, middleware=[Middleware(Cors, origins=[LISTED], told=Seldom(0))])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://hub:8000") as http:
        # The node's own pages (by their host, or as the browser says behind a proxy that
        # renamed it), and a listed page.
        own = {"Origin": "https://hub.example.com", "Sec-Fetch-Site": "same-origin"}
        for headers in ({"Origin": "http://hub:8000"}, own, {"Origin": LISTED}):
            assert (await http.get("/v1/devices", headers=headers)).status_code == 200
        assert (await http.get("/healthz", headers={"Origin": HOSTILE})).status_code == 200
        assert caplog.messages == []
        hidden = await http.get("/v1/devices", headers={"Origin": HOSTILE})
    assert hidden.status_code == 200
    assert "access-control-allow-origin" not in hidden.headers
    assert caplog.messages == [
        f"answered a request from origin {HOSTILE}, which HUB_CORS_ORIGINS does not list: "
        "the browser hides the answer from the page"
    ]


def test_refusals_are_told_once_then_counted_until_the_interval_has_passed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="hub.cors")
    clock = [100.0]
    told = Seldom(10.0, now=lambda: clock[0])
    for _ in range(1000):
        told.tell("refused")
    clock[0] += 10.0
    told.tell("refused again")
    assert caplog.messages == ["refused", "refused again (999 more since the last such line)"]


async def _restart_and_time_until(node: HubNode, heard: Callable[[], Awaitable[bool]]) -> float:
    """SIGTERM `node` (a drain's 1012 closes, and 1012 again for every retry until its
    listener closes: the retries of the newcomer's 25.9 s), start it again on its port
    after `DOWN`, and broadcast until `heard`: the seconds from its readiness to then."""
    node.signal(signal.SIGTERM)
    await asyncio.to_thread(node.wait_stopped)
    await asyncio.sleep(DOWN)
    await asyncio.to_thread(node.start)
    ready = time.monotonic()

    async def back() -> bool:
        if await heard():
            return True
        alert = {"level": "info", "message": "back"}
        await asyncio.to_thread(node.broadcast, OPERATOR, room="alerts", event="alert", data=alert)
        return await heard()

    await eventually(back, 20, "an event after the restart", interval=0.2)
    return time.monotonic() - ready


async def test_a_client_is_back_within_seconds_of_a_lone_node_restarting(
    hub_node: NodeFactory,
) -> None:
    node = hub_node("lone", unready_seconds=5)
    seen: list[Event] = []
    client = HubClient(
        [node.ws_url], token("dashboard", "d1"), rooms=["alerts"], on_event=seen.append
    )
    running = asyncio.create_task(client.run())
    await asyncio.wait_for(client.connected.wait(), 10)

    async def heard() -> bool:
        return bool(seen)

    assert await _restart_and_time_until(node, heard) < RESTART_BOUND
    await client.stop()
    await asyncio.wait_for(running, 10)


BROWSER_CLIENT = """async ({url, token}) => {
  const { HubClient } = await import("/client.js");
  window.seen = [];
  const quiet = () => {};
  window.client = new HubClient([url], token, {
    rooms: ["alerts"],
    onEvent: (event) => { window.seen.push(event.id); },
    log: { info: quiet, warn: quiet, error: (...said) => console.error(...said) },
  });
  window.client.run();
  await window.client.whenConnected();
}"""
"""The browser client with its default backoff, loaded from the node it talks to."""


async def test_a_page_is_back_within_seconds_of_a_lone_node_restarting(
    hub_node: NodeFactory, browser_context: BrowserContext
) -> None:
    node = hub_node("lone", unready_seconds=5)
    page = await browser_context.new_page()
    errors = errors_of(page)
    try:
        await page.goto(node.url + "/healthz")
        await page.evaluate(BROWSER_CLIENT, {"url": node.ws_url, "token": token("dashboard", "w")})

        async def heard() -> bool:
            seen: int = await page.evaluate("() => window.seen.length")
            return seen > 0

        assert await _restart_and_time_until(node, heard) < RESTART_BOUND
        await page.evaluate("() => window.client.stop()")
    finally:
        await page.close()
    assert errors == []


def test_the_changelog_names_the_packages_version_as_its_newest_release() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text()
    released = re.findall(r"^## \[(\d+\.\d+\.\d+)\] - \d{4}-\d{2}-\d{2}$", changelog, re.M)
    assert released, "no released version in CHANGELOG.md"
    assert released[0] == hub.__version__
    assert changelog.index("## [Unreleased]") < changelog.index(f"## [{released[0]}]")
    assert "## Versions and what they promise" in changelog
    assert "CHANGELOG.md" in (ROOT / "README.md").read_text()
