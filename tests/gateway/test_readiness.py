"""GET /readyz: ready while the store answers and the gateway is not draining."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import StartGateway, make_config
from tests.process import child_env, free_port, gateway_process, write_config

SECRET = "readyz-secret-31"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, object]]:
    async with http.get(url) as response:
        return response.status, await response.json()


async def test_ready_needs_no_auth_and_tells_nothing_else(
    start_gateway: StartGateway, state_dir: Path, http: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway(make_config(state_dir))
    assert await get(http, f"{gateway.url}/readyz") == (200, {"status": "ready"})


async def test_not_ready_when_the_store_does_not_answer_while_still_alive(
    start_gateway: StartGateway, state_dir: Path, http: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway(make_config(state_dir))
    await gateway.runtime.store.close()  # every store call now fails
    status, body = await get(http, f"{gateway.url}/readyz")
    assert (status, body["status"]) == (503, "unavailable")
    assert (await get(http, f"{gateway.url}/healthz"))[0] == 200


async def test_readyz_is_503_during_the_drain_after_sigterm_then_the_process_exits_0(
    state_dir: Path, http: aiohttp.ClientSession
) -> None:
    config = {"gateway": {"auth": {"token": SECRET}, "shutdownDelaySeconds": 3}}
    path = write_config(state_dir / "moltbot.json", config)
    args = ["gateway", "--config", str(path), "--port", str(free_port())]
    async with gateway_process(args, child_env(state_dir)) as gateway:
        assert await get(http, f"{gateway.url}/readyz") == (200, {"status": "ready"})
        gateway.process.send_signal(signal.SIGTERM)
        await gateway.read_log_until("gateway draining")
        # New connections are still served, so load balancers can see the gateway leave.
        async with aiohttp.ClientSession() as fresh:
            assert await get(fresh, f"{gateway.url}/readyz") == (503, {"status": "draining"})
            assert (await get(fresh, f"{gateway.url}/healthz"))[0] == 200
        code = await asyncio.wait_for(gateway.stop(), 20)
    assert code == 0
    events = [entry.get("event") for entry in gateway.log]
    assert events.index("gateway draining") < events.index("gateway stopped")
