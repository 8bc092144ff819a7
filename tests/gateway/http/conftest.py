"""Fixtures for the OpenAI-endpoint tests: fake upstreams and gateways built from an app."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from moltbot.config.model import Config
from moltbot.gateway.server import make_runner
from tests.conftest import Gateway
from tests.fake_upstreams import FakeOpenAI, echo_last_user

ServeApp = Callable[[web.Application, Config], Awaitable[Gateway]]


@pytest.fixture
async def up() -> AsyncIterator[FakeOpenAI]:
    """An OpenAI-format upstream that answers with the last user message."""
    async with FakeOpenAI(reply=echo_last_user) as fake:
        yield fake


@pytest.fixture
async def up2() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(reply="second provider here") as fake:
        yield fake


@pytest.fixture
async def serve_app() -> AsyncIterator[ServeApp]:
    """Serve an app the test built (and adjusted) itself, like `start_gateway` does."""
    started: list[Gateway] = []

    async def serve(app: web.Application, config: Config) -> Gateway:
        runner = make_runner(app, config)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        gateway = Gateway(app, runner, f"http://127.0.0.1:{runner.addresses[0][1]}", config)
        started.append(gateway)
        return gateway

    yield serve
    for gateway in reversed(started):
        await gateway.stop()
