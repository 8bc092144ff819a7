from __future__ import annotations

import json

import pytest

from moltbot.config.model import ModelConfig
from moltbot.content import (
    ImagePart,
    Message,
    TextPart,
    Tool,
    ToolCall,
    ToolSet,
    assistant_text,
    user_text,
)
from moltbot.providers.anthropic import AnthropicProvider
from moltbot.providers.base import (
    ErrorKind,
    Finish,
    ModelRequest,
    StreamItem,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from tests.fake_upstreams import FakeAnthropic, FakeCall, FakeUsage, provider_config
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


# -- tools and images -------------------------------------------------------------------------

WEATHER_TOOL = Tool(
    "get_weather",
    "The weather in a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
CLOCK_TOOL = Tool("get_time", None, {"type": "object", "properties": {}})


def tool_request(*messages: Message, tools: ToolSet | None = None) -> ModelRequest:
    toolset = tools if tools is not None else ToolSet((WEATHER_TOOL, CLOCK_TOOL))
    return ModelRequest("m1", "", messages, tools=toolset)


def reassembled(items: list[StreamItem]) -> dict[int, tuple[str | None, str | None, str]]:
    """index -> (id, name, arguments) from ToolCallDelta items, id and name from the first."""
    calls: dict[int, tuple[str | None, str | None, str]] = {}
    for item in items:
        if isinstance(item, ToolCallDelta):
            if item.index not in calls:
                calls[item.index] = (item.id, item.name, item.arguments)
            else:
                assert item.id is None and item.name is None, item
                call_id, name, arguments = calls[item.index]
                calls[item.index] = (call_id, name, arguments + item.arguments)
    return calls


async def test_a_tool_round_goes_out_as_tool_use_and_tool_result_blocks(
    anthropic: AnthropicProvider, anthropic_up: FakeAnthropic
) -> None:
    calls = (
        ToolCall("toolu_a", "get_weather", '{"city": "Oslo"}'),
        ToolCall("toolu_b", "get_time", ""),
    )
    request = tool_request(
        user_text("weather and time?"),
        Message("assistant", (TextPart("Checking."),), calls),
        Message("tool", (TextPart("-3 C"),), tool_call_id="toolu_a"),
        Message("tool", (), tool_call_id="toolu_b"),
        user_text("and tomorrow?"),
        tools=ToolSet((WEATHER_TOOL, CLOCK_TOOL), "required", parallel=False),
    )
    await collect(anthropic.stream(request))
    body = anthropic_up.requests[0].json
    assert body["messages"] == [
        {"role": "user", "content": "weather and time?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking."},
                {
                    "type": "tool_use",
                    "id": "toolu_a",
                    "name": "get_weather",
                    "input": {"city": "Oslo"},
                },
                {"type": "tool_use", "id": "toolu_b", "name": "get_time", "input": {}},
            ],
        },
        {  # both results, then the next question: one user message, results first
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_a", "content": "-3 C"},
                {"type": "tool_result", "tool_use_id": "toolu_b", "content": "(no output)"},
                {"type": "text", "text": "and tomorrow?"},
            ],
        },
    ]
    assert body["tools"] == [
        {
            "name": "get_weather",
            "description": "The weather in a city",
            "input_schema": WEATHER_TOOL.parameters,
        },
        {"name": "get_time", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert anthropic_up.refusals == []


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ('{"a": [1, 2]}', {"a": [1, 2]}),
        ("", {}),
        ("[1, 2]", {"arguments": [1, 2]}),  # input must be an object
        ("not json", {"arguments": "not json"}),
    ],
)
async def test_tool_use_input_is_always_an_object(
    anthropic: AnthropicProvider, anthropic_up: FakeAnthropic, arguments: str, expected: object
) -> None:
    request = tool_request(
        user_text("go"),
        Message("assistant", (), (ToolCall("toolu_1", "get_time", arguments),)),
        Message("tool", (TextPart("ok"),), tool_call_id="toolu_1"),
    )
    await collect(anthropic.stream(request))
    [use] = anthropic_up.requests[0].messages[1]["content"]
    assert use["input"] == expected


async def test_streamed_tool_use_blocks_reassemble(
    anthropic: AnthropicProvider, anthropic_up: FakeAnthropic
) -> None:
    sent = [
        FakeCall("toolu_a", "get_weather", '{"city": "Reykjavík", "days": [1, 2]}'),
        FakeCall("toolu_b", "get_time", '{"zone": "UTC"}'),
    ]
    anthropic_up.tool_calls(sent, text="Let me look.", fragment_chars=3)
    items = await collect(anthropic.stream(tool_request(user_text("weather and time"))))
    assert text_of(items) == "Let me look."
    # Content blocks 1 and 2 (after the text block) are tool calls 0 and 1.
    calls = reassembled(items)
    assert {i: (c[0], c[1]) for i, c in calls.items()} == {
        0: ("toolu_a", "get_weather"),
        1: ("toolu_b", "get_time"),
    }
    assert [json.loads(calls[i][2]) for i in (0, 1)] == [json.loads(c.arguments) for c in sent]
    fragments = [i for i in items if isinstance(i, ToolCallDelta) and i.arguments]
    assert len(fragments) > 4  # relayed as they came, not joined by the provider
    assert isinstance(items[-2], Usage) and items[-1] == Finish("tool_calls")
    body = anthropic_up.requests[0].json
    assert [t["name"] for t in body["tools"]] == ["get_weather", "get_time"]
    assert "tool_choice" not in body  # the API's default (auto)


async def test_a_tool_use_answer_as_plain_json(
    anthropic: AnthropicProvider, anthropic_up: FakeAnthropic
) -> None:
    anthropic_up.tool_calls_json([FakeCall("toolu_j", "get_weather", '{"city": "Rome"}')], "Hm.")
    items = await collect(anthropic.stream(tool_request(user_text("rome?"))))
    assert text_of(items) == "Hm."
    [call] = [i for i in items if isinstance(i, ToolCallDelta)]
    assert (call.index, call.id, call.name, json.loads(call.arguments)) == (
        0,
        "toolu_j",
        "get_weather",
        {"city": "Rome"},
    )
    assert items[-1] == Finish("tool_calls")


async def test_images_go_out_as_base64_blocks_and_stored_ones_as_notes(
    anthropic: AnthropicProvider, anthropic_up: FakeAnthropic
) -> None:
    fresh = ImagePart("image/webp", 3, "UklG")
    stored = ImagePart("image/png", 70)  # its bytes were not kept
    request = ModelRequest(
        "m1",
        "",
        (
            Message("user", (TextPart("before"), stored)),
            assistant_text("seen"),
            Message("user", (fresh, TextPart("now this"))),
        ),
    )
    await collect(anthropic.stream(request))
    messages = anthropic_up.requests[0].messages
    assert messages[0]["content"] == [
        {"type": "text", "text": "before"},
        {"type": "text", "text": stored.note()},
    ]
    assert messages[2]["content"] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/webp", "data": "UklG"}},
        {"type": "text", "text": "now this"},
    ]
