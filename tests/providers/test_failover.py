from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from moltbot.config.model import ModelsConfig
from moltbot.providers.base import ProviderError, TextDelta
from moltbot.providers.failover import FailoverStream, RetryPolicy
from moltbot.providers.registry import ProviderRegistry
from tests.fake_upstreams import FakeOpenAI, provider_config
from tests.providers.streams import collect, collect_error, make_request, text_of

FAST = RetryPolicy(max_retries=2, base_delay=0.001, max_delay=0.01)


@dataclass
class Pair:
    """Two upstreams configured as providers "a" and "b", one model "m1" each."""

    a: FakeOpenAI
    b: FakeOpenAI
    registry: ProviderRegistry

    def stream(self, *refs: str, policy: RetryPolicy = FAST) -> FailoverStream:
        return FailoverStream(self.registry, refs, make_request(model="ignored"), policy)


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    async with FakeOpenAI(reply="from a") as a, FakeOpenAI(reply="from b") as b:
        models = ModelsConfig((provider_config(a, "a"), provider_config(b, "b")))
        registry = ProviderRegistry.from_config(models, read_timeout=5)
        yield Pair(a, b, registry)
        await registry.close()


async def test_success_sets_model_ref_and_model_id(pair: Pair) -> None:
    stream = pair.stream("a/m1", "b/m1")
    assert stream.model_ref is None
    first = await anext(stream)
    assert stream.model_ref == "a/m1" and first == TextDelta("from")
    await stream.aclose()
    assert pair.a.requests[0].json["model"] == "m1"


async def test_rate_limit_then_success_is_retried_on_the_same_model(pair: Pair) -> None:
    pair.a.status(429, headers={"Retry-After": "0"})
    stream = pair.stream("a/m1", "b/m1")
    assert text_of(await collect(stream)) == "from a"
    assert (len(pair.a.requests), len(pair.b.requests)) == (2, 0)


async def test_retry_waits_at_least_retry_after(pair: Pair) -> None:
    pair.a.status(503, headers={"Retry-After": "0.2"})
    loop = asyncio.get_running_loop()
    started = loop.time()
    policy = RetryPolicy(max_retries=1, base_delay=0.0, max_delay=5.0)
    assert text_of(await collect(pair.stream("a/m1", policy=policy))) == "from a"
    assert loop.time() - started >= 0.19  # a lower bound only: never flaky on slow machines


def test_delay_is_jittered_exponential_raised_to_retry_after_and_capped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("random.uniform", lambda low, high: high)  # the jitter's upper bound
    policy = RetryPolicy(base_delay=0.25, max_delay=4.0)
    assert [policy.delay(n) for n in range(6)] == [0.25, 0.5, 1.0, 2.0, 4.0, 4.0]
    assert policy.delay(0, retry_after=3.0) == 3.0
    assert policy.delay(0, retry_after=60.0) == 4.0
    monkeypatch.setattr("random.uniform", lambda low, high: low)
    assert policy.delay(3) == 0.0


async def test_retries_exhausted_then_fallback(pair: Pair) -> None:
    pair.a.status(500).status(500).status(500)
    stream = pair.stream("a/m1", "b/m1")
    assert text_of(await collect(stream)) == "from b"
    assert stream.model_ref == "b/m1"
    assert (len(pair.a.requests), len(pair.b.requests)) == (3, 1)


async def test_non_retryable_error_falls_back_at_once(pair: Pair) -> None:
    pair.a.status(400)
    stream = pair.stream("a/m1", "b/m1")
    assert text_of(await collect(stream)) == "from b"
    assert (len(pair.a.requests), len(pair.b.requests)) == (1, 1)


async def test_no_retry_or_fallback_after_the_first_item(pair: Pair) -> None:
    pair.a.reset_after(1)
    items, error = await collect_error(pair.stream("a/m1", "b/m1"))
    assert items == [TextDelta("from")]
    assert error.kind == "connection"
    assert (len(pair.a.requests), len(pair.b.requests)) == (1, 0)


async def test_all_models_failed(pair: Pair) -> None:
    pair.a.status(401)
    pair.b.status(400)
    _, error = await collect_error(pair.stream("a/m1", "b/m1"))
    assert str(error) == (
        "All models failed (2): a/m1: a: HTTP 401: fake error 401"
        " | b/m1: b: HTTP 400: fake error 400"
    )
    assert (error.kind, error.status) == ("upstream", 400)  # the last error's


async def test_single_ref_reraises_its_own_error(pair: Pair) -> None:
    pair.a.status(401)
    _, error = await collect_error(pair.stream("a/m1"))
    assert (error.kind, str(error)) == ("auth", "a: HTTP 401: fake error 401")


async def test_duplicate_refs_are_tried_once(pair: Pair) -> None:
    pair.a.status(400)
    _, error = await collect_error(pair.stream("a/m1", "a/m1"))
    assert "All models failed" not in str(error)
    assert len(pair.a.requests) == 1


async def test_unknown_provider_is_recorded_and_skipped(pair: Pair) -> None:
    stream = pair.stream("nope/x", "b/m1")
    assert text_of(await collect(stream)) == "from b"
    _, error = await collect_error(pair.stream("nope/x"))
    assert error.kind == "config" and 'unknown model provider "nope"' in str(error)


async def test_empty_ref_list_is_a_config_error(pair: Pair) -> None:
    with pytest.raises(ProviderError) as caught:
        await collect(pair.stream())
    assert caught.value.kind == "config"


async def test_aclose_mid_stream_disconnects_upstream(pair: Pair) -> None:
    pair.a.hang(after_chunks=1)
    stream = pair.stream("a/m1", "b/m1")
    assert await anext(stream) == TextDelta("from")
    await stream.aclose()
    await pair.a.wait_disconnect()
    assert len(pair.b.requests) == 0


@pytest.mark.parametrize("script", ["hang", "backoff"])
async def test_cancellation_is_never_swallowed(pair: Pair, script: str) -> None:
    if script == "hang":
        pair.a.hang()
    else:
        pair.a.status(429, headers={"Retry-After": "30"})
    slow = RetryPolicy(max_retries=2, base_delay=30, max_delay=30)
    consumer = asyncio.create_task(collect(pair.stream("a/m1", "b/m1", policy=slow)))
    await pair.a.wait_until(lambda: len(pair.a.requests) == 1)
    consumer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumer
    if script == "hang":
        await pair.a.wait_disconnect()
    assert len(pair.b.requests) == 0
