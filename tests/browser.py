"""A real browser for the tests: Debian's Chromium, driven by Playwright, headless.

Every page fails its test on a console error or an uncaught exception: a page that logs
one is broken, whatever it shows.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, async_playwright

from tests.support import required

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
