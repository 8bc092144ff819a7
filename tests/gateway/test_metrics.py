"""GET /metrics through a real gateway, parsed with prometheus-client's own parser."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from moltbot.client import GatewayClient
from moltbot.config.model import MetricsConfig
from tests.conftest import TOKEN, Gateway, StartGateway, make_config
from tests.fake_upstreams import FakeOpenAI, FakeUsage, provider_config

ALLOWED_LABELS = {"route", "method", "status", "agent", "model", "provider", "kind", "direction"}
ALLOWED_LABELS |= {"operation", "version", "le"}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def upstream() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(reply="four words of reply") as fake:
        yield fake


async def scrape(http: aiohttp.ClientSession, gateway: Gateway) -> list[Sample]:
    async with http.get(f"{gateway.url}/metrics", headers=gateway.headers()) as response:
        assert response.status == 200
        assert response.content_type == "text/plain"
        text = await response.text()
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels` (0 when there are none)."""
    matching = [s for s in samples if s.name == name and labels.items() <= s.labels.items()]
    return sum(s.value for s in matching)


async def chat(
    http: aiohttp.ClientSession,
    gateway: Gateway,
    *,
    stream: bool = True,
    headers: dict[str, str] | None = None,
    **fields: object,
) -> int:
    body = {"model": "moltbot", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    async with http.post(
        f"{gateway.url}/v1/chat/completions",
        json={**body, **fields},
        headers=gateway.headers(**(headers or {})),
    ) as response:
        await response.read()
        return response.status


async def test_metrics_need_the_gateway_token_unless_public(
    start_gateway: StartGateway, state_dir: Path, http: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway(make_config(state_dir))
    for headers in ({}, gateway.headers("wrong")):
        async with http.get(f"{gateway.url}/metrics", headers=headers) as response:
            assert response.status == 401
            assert (await response.json())["error"]["type"] == "unauthorized"
    assert value(await scrape(http, gateway), "moltbot_build_info") == 1

    public = make_config(state_dir / "public", metrics=MetricsConfig(public=True))
    open_gateway = await start_gateway(public)
    async with http.get(f"{open_gateway.url}/metrics") as response:
        assert response.status == 200


async def test_http_requests_are_counted_by_route_pattern_and_status(
    start_gateway: StartGateway, state_dir: Path, http: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway(make_config(state_dir))
    before = await scrape(http, gateway)
    for path in ("/v1/models/moltbot/main", "/v1/models/moltbot/main", "/v1/models/nope"):
        async with http.get(gateway.url + path, headers=gateway.headers()) as response:
            await response.read()
    async with http.get(gateway.url + "/no/such/secret-path") as response:
        assert response.status == 404
    after = await scrape(http, gateway)

    def moved(**labels: str) -> float:
        name = "moltbot_http_requests_total"
        return value(after, name, **labels) - value(before, name, **labels)

    route = "/v1/models/{model_id}"
    assert moved(route=route, method="GET", status="200") == 2
    assert moved(route=route, method="GET", status="404") == 1
    assert moved(route="unmatched", status="404") == 1
    assert moved(route="/metrics", status="200") == 1  # the first scrape
    assert value(after, "moltbot_http_request_duration_seconds_count", route=route) == 3
    assert not any("secret-path" in v for s in after for v in s.labels.values())


async def test_runs_time_to_first_token_tokens_and_upstream_calls(
    start_gateway: StartGateway,
    state_dir: Path,
    http: aiohttp.ClientSession,
    upstream: FakeOpenAI,
) -> None:
    config = make_config(state_dir, providers=(provider_config(upstream),), primary="up/m1")
    gateway = await start_gateway(config)
    upstream.stream(["a ", "b"], delay=0.05, usage=FakeUsage(input_tokens=7, output_tokens=2))
    assert await chat(http, gateway) == 200
    samples = await scrape(http, gateway)
    assert value(samples, "moltbot_runs_total", agent="main", status="ok") == 1
    ttft = {"agent": "main", "model": "up/m1"}
    assert value(samples, "moltbot_time_to_first_token_seconds_count", **ttft) == 1
    assert value(samples, "moltbot_time_to_first_token_seconds_sum", **ttft) >= 0.05
    assert value(samples, "moltbot_run_duration_seconds_count", agent="main") == 1
    tokens = "moltbot_tokens_total"
    assert value(samples, tokens, agent="main", model="up/m1", direction="in") == 7
    assert value(samples, tokens, agent="main", model="up/m1", direction="out") == 2
    assert value(samples, "moltbot_upstream_calls_total", provider="up") == 1
    assert value(samples, "moltbot_upstream_errors_total") == 0

    for _ in range(3):  # the first try and both retries
        upstream.status(500)
    assert await chat(http, gateway, stream=False) == 502
    samples = await scrape(http, gateway)
    assert value(samples, "moltbot_upstream_errors_total", provider="up", kind="upstream") == 1
    assert value(samples, "moltbot_upstream_calls_total", provider="up") == 2
    assert value(samples, "moltbot_runs_total", agent="main", status="error") == 1


async def test_active_runs_and_queued_turns(
    start_gateway: StartGateway,
    state_dir: Path,
    http: aiohttp.ClientSession,
    upstream: FakeOpenAI,
) -> None:
    config = make_config(
        state_dir, providers=(provider_config(upstream),), primary="up/m1", max_concurrent=1
    )
    gateway = await start_gateway(config)
    upstream.hang()
    requests = [
        asyncio.create_task(chat(http, gateway, headers={"x-moltbot-session-key": key}))
        for key in ("agent:main:one", "agent:main:two")
    ]
    await upstream.wait_until(lambda: upstream.active_streams == 1)
    for _ in range(100):  # the second turn reaches the runtime's queue
        if len(gateway.runtime.active_runs()) == 2:
            break
        await asyncio.sleep(0.02)
    samples = await scrape(http, gateway)
    assert value(samples, "moltbot_runs_active") == 1
    assert value(samples, "moltbot_turns_queued") == 1
    for request in requests:
        request.cancel()
    await asyncio.gather(*requests, return_exceptions=True)
    for _ in range(100):
        if not gateway.runtime.active_runs():
            break
        await asyncio.sleep(0.02)
    samples = await scrape(http, gateway)
    assert value(samples, "moltbot_runs_active") == 0
    assert value(samples, "moltbot_turns_queued") == 0
    assert value(samples, "moltbot_runs_total", agent="main", status="aborted") == 2


async def test_open_websockets_are_counted(
    start_gateway: StartGateway, state_dir: Path, http: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway(make_config(state_dir))
    client = await GatewayClient.connect(gateway.ws_url, token=TOKEN)
    assert value(await scrape(http, gateway), "moltbot_ws_connections") == 1
    await client.close()
    for _ in range(100):
        if value(await scrape(http, gateway), "moltbot_ws_connections") == 0:
            break
        await asyncio.sleep(0.02)
    assert value(await scrape(http, gateway), "moltbot_ws_connections") == 0


async def test_no_label_carries_a_session_key_a_user_or_a_secret(
    start_gateway: StartGateway, state_dir: Path, http: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway(make_config(state_dir))
    headers = {"x-moltbot-session-key": "agent:main:secret-thread-41"}
    assert await chat(http, gateway, headers=headers) == 200
    assert await chat(http, gateway, user="alice-7f") == 200
    client = await GatewayClient.connect(gateway.ws_url, token=TOKEN)
    try:
        params = {"sessionKey": "ws-thread-99", "message": "hello", "idempotencyKey": "run-xyz-1"}
        await client.request("chat.send", params)
        while (event := await client.next_event(timeout=5)) is not None:
            if event.name == "chat" and event.payload["state"] == "final":
                break
    finally:
        await client.close()
    samples = await scrape(http, gateway)
    assert value(samples, "moltbot_runs_total", agent="main", status="ok") == 3
    assert {name for s in samples for name in s.labels} <= ALLOWED_LABELS
    values = " ".join(v for s in samples for v in s.labels.values())
    for secret in ("secret-thread", "alice", "ws-thread", "run-xyz", TOKEN):
        assert secret not in values


async def test_store_latency_comes_from_the_readiness_check(
    start_gateway: StartGateway, state_dir: Path, http: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway(make_config(state_dir))
    for _ in range(2):
        async with http.get(f"{gateway.url}/readyz") as response:
            assert response.status == 200
    samples = await scrape(http, gateway)
    name = "moltbot_store_operation_duration_seconds_count"
    assert value(samples, name, operation="readiness") == 2
    assert value(samples, "moltbot_store_errors_total") == 0


async def test_each_gateway_has_its_own_registry(
    start_gateway: StartGateway, state_dir: Path, http: aiohttp.ClientSession
) -> None:
    first = await start_gateway(make_config(state_dir / "a"))
    second = await start_gateway(make_config(state_dir / "b"))
    for _ in range(3):
        async with http.get(f"{first.url}/healthz") as response:
            await response.read()
    name = "moltbot_http_requests_total"
    assert value(await scrape(http, first), name, route="/healthz") == 3
    assert value(await scrape(http, second), name, route="/healthz") == 0
