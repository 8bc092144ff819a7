from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from moltbot.providers.anthropic import AnthropicProvider
from moltbot.providers.openai_compat import OpenAICompatProvider
from tests.fake_upstreams import FakeAnthropic, FakeOpenAI, FakeUpstream, provider_config
from tests.providers.streams import API_KEY


@pytest.fixture
async def openai_up() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as up:
        yield up


@pytest.fixture
async def anthropic_up() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic() as up:
        yield up


@pytest.fixture
async def openai(openai_up: FakeOpenAI) -> AsyncIterator[OpenAICompatProvider]:
    provider = OpenAICompatProvider(provider_config(openai_up, api_key=API_KEY), read_timeout=5)
    yield provider
    await provider.close()


@pytest.fixture
async def anthropic(anthropic_up: FakeAnthropic) -> AsyncIterator[AnthropicProvider]:
    provider = AnthropicProvider(provider_config(anthropic_up, api_key=API_KEY), read_timeout=5)
    yield provider
    await provider.close()


@pytest.fixture(params=["openai", "anthropic"])
async def any_up(request: pytest.FixtureRequest) -> AsyncIterator[FakeUpstream]:
    """Each fake in turn, for behaviour both providers must share."""
    fake = FakeOpenAI() if request.param == "openai" else FakeAnthropic()
    async with fake as up:
        yield up
