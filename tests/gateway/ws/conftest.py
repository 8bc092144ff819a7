"""Fixtures for the WS control-plane tests: gateways with adjustable WS options, clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from moltbot.client import GatewayClient
from moltbot.config.model import Config
from moltbot.gateway.server import build_app
from moltbot.gateway.ws import WsOptions
from tests.conftest import FAST_RETRIES, TOKEN, Gateway, ServeApp
from tests.fake_upstreams import FakeOpenAI, echo_last_user
from tests.gateway.ws.wsutil import Probe

StartWs = Callable[..., Awaitable[Gateway]]
OpenProbe = Callable[..., Awaitable[Probe]]
OpenClient = Callable[..., Awaitable[GatewayClient]]


@pytest.fixture
def start_ws(serve_app: ServeApp) -> StartWs:
    """Like `start_gateway`, with the WS options a test needs (short ticks, small buffers)."""

    async def start(
        config: Config,
        options: WsOptions | None = None,
        *,
        customize: Callable[[web.Application], None] | None = None,
    ) -> Gateway:
        """`customize`: changes to the app before it starts (e.g. a different authenticator)."""
        app = build_app(config, retry_policy=FAST_RETRIES, ws_options=options)
        if customize is not None:
            customize(app)
        return await serve_app(app, config)

    return start


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def open_probe(http: aiohttp.ClientSession) -> AsyncIterator[OpenProbe]:
    """A raw WebSocket to a gateway (no handshake yet), closed after the test."""
    probes: list[Probe] = []

    async def open_(
        gateway: Gateway, path: str = "/", headers: dict[str, str] | None = None
    ) -> Probe:
        ws = await http.ws_connect(gateway.ws_url + path, max_msg_size=0, headers=headers)
        probes.append(Probe(ws))
        return probes[-1]

    yield open_
    for probe in probes:
        await probe.ws.close()


@pytest.fixture
async def open_client() -> AsyncIterator[OpenClient]:
    """A connected `GatewayClient` (handshake done), closed after the test."""
    clients: list[GatewayClient] = []

    async def open_(gateway: Gateway, token: str | None = TOKEN) -> GatewayClient:
        client = await GatewayClient.connect(
            gateway.ws_url, token=token, client_id="test", mode="test"
        )
        clients.append(client)
        return client

    yield open_
    for client in clients:
        await client.close()


@pytest.fixture
async def up() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(reply=echo_last_user) as fake:
        yield fake
