"""Every 400 of structured turns (tools, tool rounds, images, caps) through the `openai` SDK,
each naming the field in `param`; none reaches the model."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.conftest import StartGateway
from tests.fake_upstreams import FakeCall, FakeOpenAI
from tests.gateway.http.helpers import (
    CLOCK,
    WEATHER,
    assistant_calls,
    tool_result,
    user,
    with_http,
)
from tests.gateway.http.sdk import MODES, ask
from tests.images import data_url, image_part, vision_config

CALL = FakeCall("call_1", "get_weather", '{"city": "Oslo"}')
OTHER = FakeCall("call_2", "get_time", "{}")
QUESTION = user("weather?")
PNG = data_url("image/png")


def tool_named(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}


def with_image(url: str) -> dict[str, Any]:
    return user([{"type": "text", "text": "see"}, image_part(url)])


# (id, messages, other request fields, the param the 400 must name)
CASES: list[tuple[str, list[dict[str, Any]], dict[str, Any], str]] = [
    # tools
    ("tools-not-a-list", [QUESTION], {"tools": WEATHER}, "tools"),
    ("tool-wrong-type", [QUESTION], {"tools": [{"type": "retrieval"}]}, "tools[0]"),
    ("tool-not-an-object", [QUESTION], {"tools": ["get_weather"]}, "tools[0]"),
    ("tool-no-function", [QUESTION], {"tools": [{"type": "function"}]}, "tools[0].function"),
    (
        "tool-bad-name",
        [QUESTION],
        {"tools": [WEATHER, tool_named("get weather!")]},
        "tools[1].function.name",
    ),
    ("tool-name-too-long", [QUESTION], {"tools": [tool_named("x" * 65)]}, "tools[0].function.name"),
    ("tool-duplicate-names", [QUESTION], {"tools": [WEATHER, WEATHER]}, "tools"),
    (
        "tool-parameters-not-an-object",
        [QUESTION],
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": ["city"]}}]},
        "tools[0].function.parameters",
    ),
    (
        "tool-description-not-a-string",
        [QUESTION],
        {"tools": [{"type": "function", "function": {"name": "f", "description": 7}}]},
        "tools[0].function.description",
    ),
    ("too-many-tools", [QUESTION], {"tools": [tool_named(f"t{i}") for i in range(129)]}, "tools"),
    # tool_choice and parallel_tool_calls
    (
        "tool-choice-unknown-name",
        [QUESTION],
        {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
        "tool_choice",
    ),
    ("tool-choice-required-without-tools", [QUESTION], {"tool_choice": "required"}, "tool_choice"),
    (
        "tool-choice-named-without-tools",
        [QUESTION],
        {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
        "tool_choice",
    ),
    (
        "tool-choice-unknown-mode",
        [QUESTION],
        {"tools": [WEATHER], "tool_choice": "always"},
        "tool_choice",
    ),
    (
        "parallel-not-a-boolean",
        [QUESTION],
        {"tools": [WEATHER], "parallel_tool_calls": "yes"},
        "parallel_tool_calls",
    ),
    # the deprecated function-calling API
    ("functions", [QUESTION], {"functions": [WEATHER["function"]]}, "functions"),
    ("function-call", [QUESTION], {"function_call": "auto"}, "function_call"),
    (
        "function-role",
        [QUESTION, {"role": "function", "name": "get_weather", "content": "sunny"}],
        {},
        "messages[1].role",
    ),
    # tool rounds
    (
        "tool-message-without-tool-call-id",
        [QUESTION, assistant_calls(CALL), {"role": "tool", "content": "sunny"}],
        {},
        "messages[2].tool_call_id",
    ),
    (
        "tool-message-answers-an-unknown-call",
        [QUESTION, assistant_calls(CALL), tool_result("call_9", "sunny")],
        {},
        "messages[2].tool_call_id",
    ),
    (
        "tool-message-with-no-call-before-it",
        [QUESTION, tool_result("call_1", "sunny")],
        {},
        "messages[1].tool_call_id",
    ),
    (
        "tool-message-after-a-user-message",
        [QUESTION, assistant_calls(CALL), user("hm"), tool_result("call_1", "sunny")],
        {},
        "messages[3].tool_call_id",
    ),
    (
        "call-answered-twice",
        [
            QUESTION,
            assistant_calls(CALL, OTHER),
            tool_result("call_1", "a"),
            tool_result("call_1", "b"),
        ],
        {},
        "messages[3].tool_call_id",
    ),
    (
        "tool-calls-not-a-list",
        [QUESTION, {"role": "assistant", "tool_calls": {"id": "x"}}, user("?")],
        {},
        "messages[1].tool_calls",
    ),
    (
        "tool-call-without-id",
        [
            QUESTION,
            {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f"}}]},
            user("?"),
        ],
        {},
        "messages[1].tool_calls[0].id",
    ),
    (
        "tool-call-without-name",
        [QUESTION, {"role": "assistant", "tool_calls": [{"id": "c", "function": {}}]}, user("?")],
        {},
        "messages[1].tool_calls[0].function.name",
    ),
    (
        "tool-call-arguments-not-a-string",
        [
            QUESTION,
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "f", "arguments": 5}}
                ],
            },
            user("?"),
        ],
        {},
        "messages[1].tool_calls[0].function.arguments",
    ),
    (
        "duplicate-tool-call-ids",
        [QUESTION, assistant_calls(CALL, CALL), tool_result("call_1", "a")],
        {},
        "messages[1].tool_calls",
    ),
    (
        "last-message-from-the-assistant",
        [QUESTION, {"role": "assistant", "content": "hi"}],
        {},
        "messages",
    ),
    # images
    (
        "broken-base64",
        [with_image("data:image/png;base64,iVBOR$$w0KGgo=")],
        {},
        "messages[0].content[1].image_url.url",
    ),
    (
        "unpadded-base64",
        [with_image("data:image/png;base64,iVBORw0KGgo")],
        {},
        "messages[0].content[1].image_url.url",
    ),
    (
        "empty-image",
        [with_image("data:image/png;base64,")],
        {},
        "messages[0].content[1].image_url.url",
    ),
    (
        "unsupported-mime-type",
        [with_image("data:image/bmp;base64," + base64.b64encode(b"BM\x00\x00").decode())],
        {},
        "messages[0].content[1].image_url.url",
    ),
    (
        "not-an-image",
        [with_image("data:text/plain;base64," + base64.b64encode(b"hello").decode())],
        {},
        "messages[0].content[1].image_url.url",
    ),
    (
        "non-base64-data-url",
        [with_image("data:image/png,%89PNG%0D%0A")],
        {},
        "messages[0].content[1].image_url.url",
    ),
    (
        "not-a-data-url",
        [with_image("ftp://example.com/cat.png")],
        {},
        "messages[0].content[1].image_url.url",
    ),
    (
        "https-url-while-fetching-is-off",
        [with_image("https://example.com/cat.png")],
        {},
        "messages[0].content[1].image_url.url",
    ),
    (
        "http-url-while-fetching-is-off",
        [with_image("http://127.0.0.1:9/cat.png")],
        {},
        "messages[0].content[1].image_url.url",
    ),
    (
        "image-url-without-url",
        [user([{"type": "image_url", "image_url": {"detail": "low"}}])],
        {},
        "messages[0].content[0].image_url",
    ),
    (
        "too-many-images",
        [user([image_part(PNG) for _ in range(9)])],
        {},
        "messages[0].content[8].image_url.url",
    ),
    (
        "too-many-images-across-messages",
        [
            user([image_part(PNG) for _ in range(5)]),
            {"role": "assistant", "content": "ok"},
            user([image_part(PNG) for _ in range(4)]),
        ],
        {},
        "messages[2].content[3].image_url.url",
    ),
    (
        "image-in-a-system-message",
        [{"role": "system", "content": [image_part(PNG)]}, QUESTION],
        {},
        "messages[0].content[0]",
    ),
    (
        "image-in-a-tool-result",
        [
            QUESTION,
            assistant_calls(CALL),
            {"role": "tool", "tool_call_id": "call_1", "content": [image_part(PNG)]},
        ],
        {},
        "messages[2].content[0]",
    ),
    (
        "unknown-part-type",
        [user([{"type": "input_audio", "input_audio": {}}])],
        {},
        "messages[0].content[0].type",
    ),
    # caps
    ("too-many-messages", [user(f"m{i}") for i in range(2049)], {}, "messages"),
]


@pytest.fixture
async def gateway_and_up(start_gateway: StartGateway, state_dir: Path) -> Any:
    async with FakeOpenAI() as up:
        yield await start_gateway(vision_config(state_dir, up)), up


@pytest.mark.parametrize(
    ("number", "messages", "fields", "param"),
    [(number, *case[1:]) for number, case in enumerate(CASES)],
    ids=[case[0] for case in CASES],
)
async def test_a_bad_structured_turn_is_a_400_naming_its_field(
    gateway_and_up: Any,
    number: int,
    messages: list[dict[str, Any]],
    fields: dict[str, Any],
    param: str,
) -> None:
    gateway, up = gateway_and_up
    mode = MODES[number % len(MODES)]  # each case one of the four SDK ways, in turn
    with pytest.raises(openai.BadRequestError) as caught:
        await ask(gateway, mode, messages=messages, extra_body=fields)
    error = caught.value
    assert error.status_code == 400
    assert error.param == param, error.message
    assert error.type == "invalid_request_error"
    assert error.message
    assert up.requests == []  # refused before any model call


async def test_images_over_the_decoded_byte_cap_are_a_400(
    start_gateway: StartGateway, state_dir: Path
) -> None:
    """20 MB of decoded images per request; the body limit is raised so the image cap is what
    refuses (at the default 20 MB body, the base64 would be a 413 first)."""
    async with FakeOpenAI() as up:
        config = with_http(vision_config(state_dir, up), max_body_bytes=40 * 1024 * 1024)
        gateway = await start_gateway(config)
        big = data_url("image/png", b"\x89PNG" + bytes(11 * 1024 * 1024))
        messages = [user([image_part(big), image_part(big)])]
        with pytest.raises(openai.BadRequestError) as caught:
            await ask(gateway, "async", messages=messages)
        assert caught.value.param == "messages[0].content[1].image_url.url"
        assert up.requests == []
        # One of them is within the cap.
        answer = await ask(gateway, "async", messages=[user([image_part(big)])])
        assert answer.content == "Hello from fake upstream"


async def test_an_unanswered_call_in_the_chat_gets_a_placeholder_result_not_a_400(
    gateway_and_up: Any,
) -> None:
    """A client that moved on without answering a call: providers refuse the orphan, so the
    gateway answers it for the model with an error-like result, in valid order."""
    gateway, up = gateway_and_up
    messages = [
        QUESTION,
        assistant_calls(CALL, OTHER),
        tool_result("call_2", "noon"),
        user("never mind"),
    ]
    answer = await ask(gateway, "async", messages=messages, tools=[WEATHER, CLOCK])
    assert answer.content == "Hello from fake upstream"
    sent = [m for m in up.requests[0].messages if m["role"] != "system"]
    assert [(m["role"], m.get("tool_call_id")) for m in sent] == [
        ("user", None),
        ("assistant", None),
        ("tool", "call_2"),
        ("tool", "call_1"),
        ("user", None),
    ]
    assert "No result" in sent[3]["content"]
    assert up.refusals == []


async def test_text_over_the_request_cap_is_a_400(gateway_and_up: Any) -> None:
    """4M characters of text per request, all messages together."""
    gateway, up = gateway_and_up
    half = "x" * 2_000_001
    with pytest.raises(openai.BadRequestError) as caught:
        await ask(
            gateway,
            "async-stream",
            messages=[user(half), {"role": "assistant", "content": half}, user("?")],
        )
    assert caught.value.param == "messages[1].content"
    assert up.requests == []
