"""A real browser for the tests: Debian's Chromium, driven by Playwright, headless.

Every page fails its test on a console error or an uncaught exception: a page that logs
one is broken, whatever it shows.
"""

from __future__ import annotations

import shutil
import tempfile
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


@pytest_asyncio.fixture
async def browser() -> AsyncIterator[Browser]:
    """A Chromium of the test's own, with a profile of its own."""
    executable = required("chromium")
    profile = tempfile.mkdtemp(prefix="hub-chromium-")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=executable, args=[*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
        )
        try:
            yield launched
        finally:
            await launched.close()
            shutil.rmtree(profile, ignore_errors=True)


@pytest_asyncio.fixture
async def browser_context(browser: Browser) -> AsyncIterator[BrowserContext]:
    context = await browser.new_context()
    try:
        yield context
    finally:
        await context.close()


@pytest_asyncio.fixture
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
