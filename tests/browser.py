"""A real browser for the tests: Debian's Chromium, driven by Playwright, headless.

Every page fails its test on a console error or an uncaught exception: a page that logs
one is broken, whatever it shows.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, async_playwright

from tests.support import HubNode, required

CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
"""This machine's network is closed: without the background-networking flags Chromium
keeps dialling out, and is refused many times over."""

OLD_ENGINE = """(() => {
  delete window.BigInt;
  delete window.AbortController;
  delete Object.getOwnPropertyDescriptors;
  delete Promise.prototype.finally;
  delete String.prototype.trimEnd;
  window.EventTarget = function EventTarget() { throw new TypeError("Illegal constructor"); };
  window.RegExp = new Proxy(RegExp, {
    construct(target, args) {
      if (String(args[0]).includes("\\\\p{")) throw new SyntaxError("Invalid escape");
      return Reflect.construct(target, args);
    },
  });
})()"""
"""An older screen's engine, as far as a current Chromium can play one: what the client uses
that Chromium 53 (webOS 4) lacks, taken from a page before /client.legacy.js runs in it
(BigInt, AbortController, Object.getOwnPropertyDescriptors, Promise.prototype.finally,
String.prototype.trimEnd, a constructible EventTarget, Unicode property escapes). Its
syntax is es-check's to hold (tests/test_legacy_client.py)."""


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    """One Chromium for a test module (starting one takes about a second); each test still
    gets a context and page of its own, and Playwright gives the browser a fresh profile."""
    executable = required("chromium")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        try:
            yield launched
        finally:
            await launched.close()


@pytest_asyncio.fixture(loop_scope="session")
async def browser_context(browser: Browser) -> AsyncIterator[BrowserContext]:
    context = await browser.new_context()
    # Chromium asks every page of a node (its /healthz, say) for an icon the node does not
    # have: that 404 is not the page's error.
    await context.route("**/favicon.ico", lambda route: route.fulfill(status=204))
    try:
        yield context
    finally:
        await context.close()


@pytest_asyncio.fixture(loop_scope="session")
async def page(browser_context: BrowserContext) -> AsyncIterator[Page]:
    """A fresh page; the test fails if it logged an error or threw."""
    opened = await browser_context.new_page()
    errors: list[str] = []

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(f"console: {message.text}")

    opened.on("console", console)
    opened.on("pageerror", lambda error: errors.append(f"page error: {error}"))
    yield opened
    await opened.close()
    if errors:
        pytest.fail("the page reported errors:\n" + "\n".join(errors))


DROPPED = ("WebSocket connection to", "Failed to load resource", "EventSource")
"""What Chromium itself logs as errors for each connection that failed: a refused
handshake, a node that is down, a stream cut. A page whose connections fail on purpose
expects them."""


def errors_of(page: Page, expected: tuple[str, ...] = DROPPED) -> list[str]:
    """The errors `page` will log or throw, but for Chromium's own lines about failed
    connections (`expected`): the test asserts the list empty at its end."""
    errors: list[str] = []

    def console(message: ConsoleMessage) -> None:
        if message.type == "error" and not message.text.startswith(expected):
            errors.append(message.text)

    page.on("console", console)
    page.on("pageerror", lambda error: errors.append(str(error)))
    return errors


MODULE = "module"
CLASSIC = "classic"

OPEN = """async ({urls, token, options, bundle}) => {
  const { HubClient } = bundle === "module" ? await import("/client.js") : window.Hub;
  const record = { ids: [], events: [], states: [], lost: [], errors: [], nodes: [],
                   warnings: [], retries: 0, refused: null, tokens: 0, beats: 0 };
  const tokens = [token, ...(options.later ?? [])];
  const provider = async () => tokens[Math.min(record.tokens++, tokens.length - 1)];
  const client = new HubClient(urls, options.provider ? provider : token, {
    ...options,
    backoff: { base: 0.05, cap: 0.5 },
    log: {
      info: () => {},
      warn: (...said) => { record.warnings.push(said.join(" ")); console.warn(...said); },
      error: (...said) => console.error(...said),
    },
    onEvent: (event) => {
      record.ids.push(event.id);
      record.events.push({ event: event.event, id: event.id, state: event.state === true });
    },
    onState: options.withState
      ? (room, events) => { record.states.push({ room, ids: events.map((e) => e.id) }); }
      : undefined,
    onLost: (room) => { record.lost.push(room); },
    onError: (error) => {
      record.errors.push({ name: error.name, room: error.room, code: error.code });
    },
    heartbeat: options.beats ? () => ({ status: "playing", uptime: ++record.beats }) : undefined,
  });
  client.addEventListener("welcome", (event) => record.nodes.push(event.detail.node));
  client.addEventListener("disconnected", () => { record.retries += 1; });
  client.run().catch((error) => {
    record.refused = { name: error.name, status: error.status, code: error.code,
                       message: error.message };
  });
  (window.clients ??= []).push({ client, record });
  if (options.wait !== false) await client.whenConnected();
  return window.clients.length - 1;
}"""
"""Take the client the page loaded from the node it came from, start one, and keep what it
hands over in `window.clients[n].record`."""


async def start_client(
    page: Page, node: HubNode, urls: list[str], bearer: str, bundle: str = MODULE, **options: Any
) -> int:
    """A HubClient in `page`, loaded from `node`; its index in `window.clients`."""
    if not page.url.startswith(node.url):
        if bundle == CLASSIC:
            await page.add_init_script(OLD_ENGINE)
        # Any page of the node's origin will do.
        await page.goto(node.url + "/healthz")
        if bundle == CLASSIC:
            await page.add_script_tag(url="/client.legacy.js")  # <script src="...">
    arguments = {"urls": urls, "token": bearer, "options": options, "bundle": bundle}
    index: int = await page.evaluate(OPEN, arguments)
    return index


async def record(page: Page, index: int = 0) -> dict[str, Any]:
    value: dict[str, Any] = await page.evaluate("n => window.clients[n].record", index)
    return value
