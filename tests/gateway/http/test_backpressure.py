"""A client that stops reading a stream holds its run, and the run its upstream, back: memory
stays bounded (no timing involved), and a client stuck past the stall limit is cut off."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from moltbot.agents.run import EVENT_OVERHEAD_BYTES, RUN_BUFFER_BYTES, Run
from moltbot.config.model import ProviderConfig
from moltbot.gateway.http.openai import STALL_KEY
from moltbot.gateway.server import build_app
from tests.conftest import FAST_RETRIES, TOKEN, ServeApp, make_config
from tests.gateway.ws.wsutil import wait_for

CHUNK = "y" * 99 + " "
TOTAL_CHUNKS = 1_000_000  # ~150 MB: far more than the kernel's socket buffers absorb
POLL_SECONDS = 0.05


class CountingUpstream:
    """An OpenAI-format upstream that streams TOTAL_CHUNKS deltas, one write each, counting
    how many the gateway has taken off the socket so far."""

    def __init__(self) -> None:
        self.sent = 0
        self.disconnected = asyncio.Event()
        self.base_url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            for _ in range(TOTAL_CHUNKS):
                delta = {"choices": [{"index": 0, "delta": {"content": CHUNK}}]}
                await response.write(b"data: " + json.dumps(delta).encode() + b"\n\n")
                self.sent += 1
            await response.write(b"data: [DONE]\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            self.disconnected.set()
            raise
        return response


@pytest.fixture
async def upstream() -> AsyncIterator[CountingUpstream]:
    fake = CountingUpstream()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", fake.handle)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fake.base_url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    yield fake
    await runner.cleanup()


async def open_stream_and_stop_reading(url: str) -> asyncio.StreamWriter:
    """Send a streaming request on a raw socket and never read the answer."""
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps(
        {"model": "moltbot", "stream": True, "messages": [{"role": "user", "content": "go"}]}
    ).encode()
    _, writer = await asyncio.open_connection(host, int(port))
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode() + body)
    await writer.drain()
    return writer


async def until_held_back(upstream: CountingUpstream, polls: int = 20) -> None:
    """Wait (at most 30 s) until the upstream has sent nothing more for `polls` polls."""
    last, steady = -1, 0
    async with asyncio.timeout(30):
        while steady < polls:
            await asyncio.sleep(POLL_SECONDS)
            steady = steady + 1 if upstream.sent == last and upstream.sent > 0 else 0
            last = upstream.sent


async def serve(serve_app: ServeApp, state_dir: Path, upstream: CountingUpstream, stall: float):
    provider = ProviderConfig(name="up", base_url=upstream.base_url, api="openai-completions")
    config = make_config(state_dir, providers=(provider,), primary="up/m1")
    app = build_app(config, retry_policy=FAST_RETRIES)
    app[STALL_KEY] = stall
    return await serve_app(app, config)


async def test_a_client_that_stops_reading_holds_the_upstream_back(
    serve_app: ServeApp, state_dir: Path, upstream: CountingUpstream
) -> None:
    gateway = await serve(serve_app, state_dir, upstream, stall=120.0)
    writer = await open_stream_and_stop_reading(gateway.url)
    try:
        await until_held_back(upstream)
        [run] = gateway.runtime.active_runs()
        assert isinstance(run, Run) and run.status == "running"
        # The upstream is held back long before the end: TCP pushed back to it.
        assert upstream.sent < TOTAL_CHUNKS // 4
        # What the run holds for its consumer stays under the fixed bound.
        assert run.buffered_bytes <= RUN_BUFFER_BYTES + EVENT_OVERHEAD_BYTES + len(CHUNK)
        # Held back, not failed: once the client goes, the run ends and the upstream is closed.
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    async with asyncio.timeout(10):
        await upstream.disconnected.wait()
    assert gateway.runtime.active_runs() == []


async def test_a_client_stuck_past_the_stall_limit_is_cut_off(
    serve_app: ServeApp, state_dir: Path, upstream: CountingUpstream
) -> None:
    gateway = await serve(serve_app, state_dir, upstream, stall=0.5)
    writer = await open_stream_and_stop_reading(gateway.url)
    try:
        # The gateway gives up on the client itself: the run ends, the upstream is closed.
        async with asyncio.timeout(15):
            await upstream.disconnected.wait()
        await wait_for(lambda: not gateway.runtime.active_runs())
        assert upstream.sent < TOTAL_CHUNKS
        # The gateway still serves others.
        async with asyncio.timeout(10):
            health = await gateway.openai().models.list()
        assert any(model.id == "moltbot/default" for model in health.data)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
