from __future__ import annotations

import pytest

from moltbot.config.model import ModelConfig
from moltbot.content import assistant_text, user_text
from moltbot.providers.anthropic import AnthropicProvider
from moltbot.providers.base import ErrorKind, Finish, TextDelta, Usage
from tests.fake_upstreams import FakeAnthropic, FakeUsage, provider_config
from tests.providers.streams import API_KEY, collect, collect_error, make_request, text_of


async def test_streams_text_then_usage_then_finish(
    anthropic: AnthropicProvider, anthropic_up: FakeAnthropic
) -> None:
    items = await collect(anthropic.stream(make_request("one two three", system="Be brief.")))
    assert len([item for item in items if isinstance(item, TextDelta)]) > 1
    assert text_of(items) == "Hello from fake upstream"
    assert items[-2:] == [Usage(input_tokens=5, output_tokens=4), Finish("stop")]


async def test_request_shape_and_headers(
    anthropic: AnthropicProvider, anthropic_up: FakeAnthropic
) -> None:
    history = (user_text("earlier"), assistant_text("reply"))
    await collect(anthropic.stream(make_request("now", system="Be brief.", history=history)))
    (seen,) = anthropic_up.requests
    assert (seen.method, seen.path) == ("POST", "/v1/messages")
    assert seen.headers["x-api-key"] == API_KEY
    assert seen.headers["anthropic-version"] == "2023-06-01"
    assert seen.headers.getall("content-type") == ["application/json"]
    assert "Authorization" not in seen.headers
    assert seen.json == {
        "model": "m1",
        "system": "Be brief.",
        "messages": [
            {"role": "user", "content": "earlier"},
            {"role": "assistant", "content": "reply"},
            {"role": "user", "content": "now"},
        ],
        "max_tokens": 8192,  # the model's configured maxTokens (ModelConfig default)
        "stream": True,
    }


async def test_sampling_mapping_drops_what_the_api_lacks(
    anthropic: AnthropicProvider, anthropic_up: FakeAnthropic
) -> None:
    request = make_request(
        temperature=0.3, top_p=0.8, max_tokens=77, stop=("END",), seed=1, presence_penalty=1.0
    )
    await collect(anthropic.stream(request))
    body = anthropic_up.requests[0].json
    assert body["temperature"] == 0.3
    assert body["top_p"] == 0.8
    assert body["max_tokens"] == 77
    assert body["stop_sequences"] == ["END"]
    for dropped in ("stop", "seed", "presence_penalty", "frequency_penalty", "system"):
        assert dropped not in body


@pytest.mark.parametrize(
    ("model", "configured", "expected"),
    [("big", 1234, 1234), ("unlisted", 1234, 4096)],
)
async def test_max_tokens_default(
    anthropic_up: FakeAnthropic, model: str, configured: int, expected: int
) -> None:
    big = ModelConfig("big", "Big", max_tokens=configured)
    provider = AnthropicProvider(provider_config(anthropic_up, models=[big]))
    await collect(provider.stream(make_request(model=model)))
    await provider.close()
    assert anthropic_up.requests[0].json["max_tokens"] == expected


async def test_stop_reason_max_tokens_is_length_and_cache_usage(
    anthropic: AnthropicProvider, anthropic_up: FakeAnthropic
) -> None:
    usage = FakeUsage(10, 2, cache_read_tokens=30, cache_write_tokens=5)
    anthropic_up.stream(["a", "b"], finish="length", usage=usage)
    items = await collect(anthropic.stream(make_request()))
    assert items == [
        TextDelta("a"),
        TextDelta("b"),
        Usage(input_tokens=10, output_tokens=2, cache_read_tokens=30, cache_write_tokens=5),
        Finish("length"),
    ]


@pytest.mark.parametrize(
    ("error_type", "kind", "status", "retryable"),
    [
        ("overloaded_error", "upstream", 529, True),
        ("rate_limit_error", "rate_limit", 429, True),
        ("authentication_error", "auth", 401, False),
        ("invalid_request_error", "upstream", 400, False),
    ],
)
async def test_error_event(
    anthropic: AnthropicProvider,
    anthropic_up: FakeAnthropic,
    error_type: str,
    kind: ErrorKind,
    status: int,
    retryable: bool,
) -> None:
    anthropic_up.error_frame("Overloaded", error_type=error_type, after_chunks=1)
    items, error = await collect_error(anthropic.stream(make_request()))
    assert text_of(items) == "Hello"
    assert (error.kind, error.status, error.retryable) == (kind, status, retryable)
    assert "Overloaded" in str(error)


async def test_plain_json_answer_is_accepted(
    anthropic: AnthropicProvider, anthropic_up: FakeAnthropic
) -> None:
    anthropic_up.json_answer("whole answer")
    items = await collect(anthropic.stream(make_request("a b c")))
    assert items == [TextDelta("whole answer"), Usage(3, 2), Finish("stop")]
