"""The web chat page as a test drives it: what a user types and clicks, what they see."""

from __future__ import annotations

from typing import Any

from playwright.async_api import ConsoleMessage, Locator, Page, expect

from tests.conftest import TOKEN, Gateway

SEND_ATTEMPTS = 5


class ChatPage:
    def __init__(self, page: Page, gateway: Gateway) -> None:
        self.page = page
        self.gateway = gateway
        # What the browser complained about: CSP violations, script errors.
        self.problems: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error" and "WebSocket" not in message.text:
            self.problems.append(message.text)

    async def open(self, suffix: str = "/") -> None:
        await self.page.goto(self.gateway.url + suffix)

    async def log_in(self, secret: str = TOKEN) -> None:
        await self.page.locator("#secret").fill(secret)
        await self.page.locator("#secret").press("Enter")

    async def expect_connected(self) -> None:
        await expect(self.page.locator("#conn")).to_have_text("connected")
        await expect(self.page.locator("#app")).to_be_visible()

    async def send(self, text: str) -> None:
        """Type and send; done once the page took the message (it clears the box). Just after
        log-in the page may still be opening the session and ignores Enter, as it does for a
        person: press again then, a bounded number of times."""
        box = self.page.locator("#message")
        await box.fill(text)
        for _ in range(SEND_ATTEMPTS):
            await box.press("Enter")
            try:
                await expect(box).to_have_value("", timeout=1_000)
                return
            except AssertionError:
                continue
        await expect(box).to_have_value("")  # fails with the page's state in the message

    @property
    def messages(self) -> Locator:
        return self.page.locator("#messages .msg")

    @property
    def last_reply(self) -> Locator:
        return self.page.locator("#messages .msg-assistant").last

    @property
    def sessions(self) -> Locator:
        return self.page.locator("#sessions .session")

    async def session_storage(self, key: str) -> Any:
        return await self.page.evaluate("(key) => sessionStorage.getItem(key)", key)

    async def expect_no_problems(self) -> None:
        assert self.problems == []
