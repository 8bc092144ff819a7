"""Headless Chromium (Debian's, at /usr/bin/chromium) driven by Playwright, for the web page.

`make test` installs Chromium first (scripts/install-test-deps.sh); where it cannot, every
browser test skips with one line saying why.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from playwright.async_api import Browser, ViewportSize, async_playwright

from tests.conftest import Gateway
from tests.gateway.ui.chatpage import ChatPage

CHROMIUM = Path("/usr/bin/chromium")
HAVE_CHROMIUM = CHROMIUM.exists()
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DESKTOP: ViewportSize = {"width": 1100, "height": 760}
PHONE: ViewportSize = {"width": 390, "height": 760}

OpenPage = Callable[..., Awaitable[ChatPage]]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not HAVE_CHROMIUM:
        pytest.skip(f"browser tests need {CHROMIUM} (scripts/install-test-deps.sh installs it)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=30_000
        )
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
def open_page(browser: Browser) -> OpenPage:
    """A page in a fresh browser context (so its own sessionStorage)."""

    async def open_(gateway: Gateway, viewport: ViewportSize = DESKTOP) -> ChatPage:
        context = await browser.new_context(viewport=viewport)
        return ChatPage(await context.new_page(), gateway)

    return open_
