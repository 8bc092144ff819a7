"""The graceful stop of a real gateway process: SIGTERM, as systemd sends it."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from moltbot.client import GatewayClient
from tests.gateway.ws.wsutil import WAIT, collect_until
from tests.process import child_env, free_port, gateway_process, write_config

SECRET = "ws-process-secret-41d2"


async def test_sigterm_says_shutdown_then_closes_with_1012_and_exits_0(state_dir: Path) -> None:
    path = write_config(state_dir / "moltbot.json", {"gateway": {"auth": {"token": SECRET}}})
    args = ["gateway", "--config", str(path), "--port", str(free_port())]
    async with gateway_process(args, child_env(state_dir)) as gateway:
        url = gateway.url.replace("http://", "ws://")
        client = await GatewayClient.connect(url, token=SECRET, client_id="test", mode="test")
        try:
            assert (await client.request("health"))["ok"] is True
            gateway.process.send_signal(signal.SIGTERM)
            events = await collect_until(client, lambda e: e.name == "shutdown")
            assert events[-1].payload == {"reason": "gateway stopping"}
            assert await client.next_event(timeout=WAIT) is None  # then the close
            assert client.closed is not None
            assert (client.closed.code, client.closed.reason) == (1012, "service restart")
        finally:
            await client.close()
        async with asyncio.timeout(WAIT):
            assert await gateway.stop() == 0
    assert any(entry.get("event") == "gateway stopped" for entry in gateway.log)
