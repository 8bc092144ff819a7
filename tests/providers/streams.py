"""Small helpers shared by the provider tests."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

from moltbot.config.model import ProviderConfig
from moltbot.content import Message, user_text
from moltbot.providers.anthropic import AnthropicProvider
from moltbot.providers.base import (
    ModelRequest,
    Provider,
    ProviderError,
    SamplingParams,
    StreamItem,
    TextDelta,
)
from moltbot.providers.openai_compat import OpenAICompatProvider
from tests.fake_upstreams import FakeAnthropic, FakeUpstream, provider_config

# Distinctive enough that finding it anywhere means it leaked.
API_KEY = "sk-test-LEAKCHECK-7f3a9c21"


def make_request(
    text: str = "hi there",
    *,
    system: str = "",
    model: str = "m1",
    history: Iterable[Message] = (),
    **sampling: Any,
) -> ModelRequest:
    messages = (*history, user_text(text))
    return ModelRequest(model, system, messages, SamplingParams(**sampling))


async def collect(stream: AsyncIterable[StreamItem]) -> list[StreamItem]:
    return [item async for item in stream]


async def collect_error(
    stream: AsyncIterable[StreamItem],
) -> tuple[list[StreamItem], ProviderError]:
    """The items before the stream failed, and its error (the stream must fail)."""
    items: list[StreamItem] = []
    try:
        async for item in stream:
            items.append(item)
    except ProviderError as error:
        return items, error
    raise AssertionError(f"stream ended without error after {items}")


def text_of(items: Iterable[StreamItem]) -> str:
    return "".join(item.text for item in items if isinstance(item, TextDelta))


@asynccontextmanager
async def provider_for(
    up: FakeUpstream, config: ProviderConfig | None = None, **timeouts: float
) -> AsyncIterator[Provider]:
    """The real provider for the fake's wire format (`config`, by default one with `API_KEY`),
    closed afterwards."""
    config = config or provider_config(up, api_key=API_KEY)
    provider_class = AnthropicProvider if isinstance(up, FakeAnthropic) else OpenAICompatProvider
    provider = provider_class(config, **timeouts)
    try:
        yield provider
    finally:
        await provider.close()
