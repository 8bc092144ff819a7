from __future__ import annotations

import pytest

from moltbot.content import assistant_text, user_text
from moltbot.providers.base import Finish, TextDelta, Usage
from moltbot.providers.openai_compat import OpenAICompatProvider
from tests.fake_upstreams import FakeOpenAI, FakeUsage, provider_config
from tests.providers.streams import API_KEY, collect, collect_error, make_request, text_of


async def test_streams_text_then_usage_then_finish(
    openai: OpenAICompatProvider, openai_up: FakeOpenAI
) -> None:
    items = await collect(openai.stream(make_request("one two three")))
    deltas = [item for item in items if isinstance(item, TextDelta)]
    assert len(deltas) > 1  # really streamed in pieces
    assert text_of(items) == "Hello from fake upstream"
    assert items[-2:] == [Usage(input_tokens=3, output_tokens=4), Finish("stop")]


async def test_request_shape_and_headers(openai_up: FakeOpenAI) -> None:
    config = provider_config(openai_up, api_key=API_KEY, headers={"X-Team": "core"})
    provider = OpenAICompatProvider(config)
    history = (user_text("earlier"), assistant_text("reply"))
    await collect(provider.stream(make_request("now", system="Be brief.", history=history)))
    await provider.close()

    (seen,) = openai_up.requests
    assert (seen.method, seen.path) == ("POST", "/v1/chat/completions")
    assert seen.headers["Authorization"] == f"Bearer {API_KEY}"
    assert seen.headers["X-Team"] == "core"
    assert seen.headers.getall("Content-Type") == ["application/json"]
    assert seen.json == {
        "model": "m1",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "earlier"},
            {"role": "assistant", "content": "reply"},
            {"role": "user", "content": "now"},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def test_sampling_fields_are_forwarded_when_set(
    openai: OpenAICompatProvider, openai_up: FakeOpenAI
) -> None:
    request = make_request(
        temperature=0.2,
        top_p=0.9,
        max_tokens=50,
        stop=("END", "STOP"),
        seed=7,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
    )
    await collect(openai.stream(request))
    body = openai_up.requests[0].json
    assert body["temperature"] == 0.2
    assert body["top_p"] == 0.9
    assert body["max_tokens"] == 50
    assert body["stop"] == ["END", "STOP"]
    assert body["seed"] == 7
    assert body["presence_penalty"] == 0.5
    assert body["frequency_penalty"] == -0.5


async def test_unset_fields_and_missing_key_are_not_sent(openai_up: FakeOpenAI) -> None:
    provider = OpenAICompatProvider(provider_config(openai_up))
    await collect(provider.stream(make_request(temperature=0.0)))
    await provider.close()
    seen = openai_up.requests[0]
    assert "Authorization" not in seen.headers
    assert seen.json["messages"] == [{"role": "user", "content": "hi there"}]  # no system
    assert seen.json["temperature"] == 0.0  # zero is a value, not "unset"
    for unset in ("top_p", "max_tokens", "stop", "seed", "presence_penalty", "frequency_penalty"):
        assert unset not in seen.json


async def test_finish_reason_length_and_cached_usage(
    openai: OpenAICompatProvider, openai_up: FakeOpenAI
) -> None:
    openai_up.stream(["a", "b"], finish="length", usage=FakeUsage(10, 2, cache_read_tokens=4))
    items = await collect(openai.stream(make_request()))
    assert items == [
        TextDelta("a"),
        TextDelta("b"),
        Usage(input_tokens=10, output_tokens=2, cache_read_tokens=4),
        Finish("length"),
    ]


async def test_plain_json_answer_is_accepted(
    openai: OpenAICompatProvider, openai_up: FakeOpenAI
) -> None:
    openai_up.json_answer("the whole answer", finish="length")
    items = await collect(openai.stream(make_request("a b")))
    assert items == [TextDelta("the whole answer"), Usage(2, 3), Finish("length")]


async def test_error_frame_is_an_upstream_error(
    openai: OpenAICompatProvider, openai_up: FakeOpenAI
) -> None:
    openai_up.error_frame("model crashed", after_chunks=1)
    items, error = await collect_error(openai.stream(make_request()))
    assert text_of(items) == "Hello"
    assert error.kind == "upstream"
    assert "model crashed" in str(error)


async def test_shared_session_reused_and_closed(
    openai: OpenAICompatProvider, openai_up: FakeOpenAI
) -> None:
    await collect(openai.stream(make_request()))
    session = openai._client._session
    await collect(openai.stream(make_request()))
    assert session is not None and openai._client._session is session
    await openai.close()
    assert session.closed


@pytest.mark.parametrize("n", [5])
async def test_concurrent_streams_share_one_provider(
    openai: OpenAICompatProvider, openai_up: FakeOpenAI, n: int
) -> None:
    for _ in range(n):
        openai_up.hang(after_chunks=1)
    streams = [openai.stream(make_request()) for _ in range(n)]
    firsts = [await anext(stream) for stream in streams]
    await openai_up.wait_until(lambda: openai_up.active_streams == n)
    assert firsts == [TextDelta("Hello")] * n
    for stream in streams:
        await stream.aclose()  # type: ignore[attr-defined]
    await openai_up.wait_until(lambda: openai_up.active_streams == 0)
    assert openai_up.max_active_streams == n
