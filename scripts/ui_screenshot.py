"""Take docs/ui.png: the web chat page after a short conversation, in headless Chromium.

    .venv/bin/python scripts/ui_screenshot.py [OUT.png] [--phone]

Runs a throwaway gateway on a free loopback port with the offline echo model and a temporary
state dir; needs /usr/bin/chromium (scripts/install-test-deps.sh) and the test extras.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from aiohttp import web
from playwright.async_api import async_playwright, expect

from moltbot.config.model import (
    AgentConfig,
    AgentsConfig,
    AuthConfig,
    Config,
    GatewayConfig,
    Identity,
)
from moltbot.gateway.server import build_app, make_runner

TOKEN = "screenshot-token"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
MESSAGES = ["Hello! What can you do?", "Summarise this gateway in one line, please."]


async def main(out: Path, phone: bool) -> None:
    with tempfile.TemporaryDirectory() as state:
        agents = (
            AgentConfig(id="main", default=True, identity=Identity(name="Molty")),
            AgentConfig(id="research", name="Research"),
        )
        config = Config(
            gateway=GatewayConfig(auth=AuthConfig(token=TOKEN)),
            agents=AgentsConfig(list=agents),
            state_dir=Path(state),
        )
        runner = make_runner(build_app(config), config)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/"
        try:
            await shoot(url, out, phone)
        finally:
            await runner.cleanup()


async def shoot(url: str, out: Path, phone: bool) -> None:
    viewport = {"width": 390, "height": 760} if phone else {"width": 1100, "height": 640}
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS
        )
        page = await browser.new_page(viewport=viewport, color_scheme="light")  # type: ignore[arg-type]
        await page.goto(f"{url}#token={TOKEN}")
        await expect(page.locator("#conn")).to_have_text("connected")
        for text in MESSAGES:
            replies = await page.locator(".msg-assistant").count()
            await page.locator("#message").fill(text)
            await page.locator("#message").press("Enter")
            await expect(page.locator(".msg-assistant:not(.streaming)")).to_have_count(replies + 1)
        if not phone:  # a second session in the list, the first one open
            await page.locator("#new-session").click()
            await expect(page.locator("#sessions .session")).to_have_count(2)
            main = page.locator('#sessions [data-key="agent:main:main"] .session-open')
            await main.click()
            await expect(main).to_have_attribute("aria-current", "true")
            await expect(page.locator(".msg")).to_have_count(2 * len(MESSAGES))
        await page.locator("#message").fill("Draft of a next question…")
        await page.locator("#message").focus()
        await page.screenshot(path=str(out))
        await browser.close()


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    asyncio.run(main(Path(args[0] if args else "docs/ui.png"), "--phone" in sys.argv))
