"""Client function tools on /v1/chat/completions, through the official `openai` SDK and the raw
SSE wire, against fake OpenAI and Anthropic upstreams speaking their real tool formats. The
agent's own tools are off here (NO_AGENT_TOOLS): the fakes see exactly the client's tools."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from moltbot.client import GatewayClient
from tests.conftest import NO_AGENT_TOOLS, TOKEN, StartGateway
from tests.fake_upstreams import (
    OMIT,
    ArgsStep,
    CallStart,
    FakeAnthropic,
    FakeCall,
    FakeOpenAI,
    FakeUpstream,
    Step,
    WireIndex,
    fragments,
)
from tests.gateway.http.helpers import (
    CHAT_PATH,
    CLOCK,
    WAIT,
    WEATHER,
    assistant_calls,
    chat_body,
    sse_chunks,
    tool_result,
    upstream_config,
    user,
)
from tests.gateway.http.sdk import MODES, Mode, ask

QUESTION = "What is the weather in Paris?"
PARIS = FakeCall("call_w1", "get_weather", '{"city": "Paris", "unit": "c"}')


def conversation(recorded_messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages an OpenAI-format upstream got, without the system prompt."""
    return [m for m in recorded_messages if m["role"] != "system"]


def openai_call(call: FakeCall) -> dict[str, Any]:
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }


# -- a tool round trip ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_tool_round_trip(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI, mode: Mode
) -> None:
    gateway = await start_gateway(upstream_config(state_dir, up, tools=NO_AGENT_TOOLS))
    up.tool_calls([PARIS], fragment_chars=4)
    first = await ask(gateway, mode, messages=[user(QUESTION)], tools=[WEATHER])
    assert first.finish_reason == "tool_calls"
    assert [(c.id, c.name) for c in first.tool_calls] == [("call_w1", "get_weather")]
    assert json.loads(first.tool_calls[0].arguments) == {"city": "Paris", "unit": "c"}
    assert not first.content
    sent = up.requests[0].json
    assert sent["tools"] == [WEATHER]  # passed through unchanged
    assert "tool_choice" not in sent and "parallel_tool_calls" not in sent

    up.stream(["It is", " 21 degrees", " in Paris."])
    messages = [user(QUESTION), assistant_calls(PARIS), tool_result("call_w1", '{"temp": 21}')]
    second = await ask(gateway, mode, messages=messages, tools=[WEATHER])
    assert second.content == "It is 21 degrees in Paris."
    assert second.finish_reason == "stop"
    assert second.tool_calls == []
    assert conversation(up.requests[1].messages) == [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": None, "tool_calls": [openai_call(PARIS)]},
        {"role": "tool", "tool_call_id": "call_w1", "content": '{"temp": 21}'},
    ]
    assert up.requests[1].json["tools"] == [WEATHER]
    assert up.refusals == []


@pytest.mark.parametrize("mode", ["async", "sync-stream"])
async def test_tool_round_trip_through_anthropic(
    start_gateway: StartGateway, state_dir: Path, mode: Mode
) -> None:
    async with FakeAnthropic() as up:
        gateway = await start_gateway(upstream_config(state_dir, up, tools=NO_AGENT_TOOLS))
        call = FakeCall("toolu_01", "get_weather", '{"city": "Paris", "unit": "c"}')
        up.tool_calls([call], text="Let me check.", fragment_chars=3)
        first = await ask(gateway, mode, messages=[user(QUESTION)], tools=[WEATHER])
        assert first.finish_reason == "tool_calls"
        assert first.content == "Let me check."
        assert [(c.id, c.name) for c in first.tool_calls] == [("toolu_01", "get_weather")]
        assert json.loads(first.tool_calls[0].arguments) == {"city": "Paris", "unit": "c"}
        assert up.requests[0].tools == [
            {
                "name": "get_weather",
                "description": "The weather in a city",
                "input_schema": WEATHER["function"]["parameters"],
            }
        ]

        up.stream(["Sunny,", " 21."])
        messages = [
            user(QUESTION),
            assistant_calls(call, content="Let me check."),
            tool_result("toolu_01", "21 C, sunny"),
        ]
        second = await ask(gateway, mode, messages=messages, tools=[WEATHER])
        assert second.content == "Sunny, 21."
        assert second.finish_reason == "stop"
        assert up.requests[1].messages == [
            {"role": "user", "content": QUESTION},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Let me check."},
                    {
                        "type": "tool_use",
                        "id": "toolu_01",
                        "name": "get_weather",
                        "input": {"city": "Paris", "unit": "c"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_01", "content": "21 C, sunny"}
                ],
            },
        ]
        assert up.refusals == []


async def test_call_ids_anthropic_would_refuse_are_mapped_consistently(
    start_gateway: StartGateway, state_dir: Path
) -> None:
    """Ids from other servers (Kimi's `functions.get_weather:0`) break Anthropic's id pattern;
    a chat that has them still works there, each call still paired with its result."""
    async with FakeAnthropic() as up:
        gateway = await start_gateway(upstream_config(state_dir, up, tools=NO_AGENT_TOOLS))
        odd = [
            FakeCall("functions.get_weather:0", "get_weather", '{"city": "Paris"}'),
            FakeCall("functions.get_weather:1", "get_weather", '{"city": "Oslo"}'),
        ]
        messages = [
            user(QUESTION),
            assistant_calls(*odd),
            tool_result(odd[0].id, "sunny"),
            tool_result(odd[1].id, "snow"),
        ]
        answer = await ask(gateway, "async", messages=messages, tools=[WEATHER])
        assert answer.content == "Hello from fake upstream", up.refusals
        uses = [b["id"] for b in up.requests[0].messages[1]["content"]]
        results = [b["tool_use_id"] for b in up.requests[0].messages[2]["content"]]
        assert uses == results and len(set(uses)) == 2
        assert all(i.startswith("functions_get_weather_") for i in uses)


@pytest.mark.parametrize("fake", [FakeOpenAI, FakeAnthropic])
async def test_a_non_streamed_upstream_tool_answer(
    start_gateway: StartGateway, state_dir: Path, fake: type[FakeUpstream]
) -> None:
    """A server that ignores `stream: true` and answers with one JSON document."""
    async with fake() as up:
        gateway = await start_gateway(upstream_config(state_dir, up, tools=NO_AGENT_TOOLS))
        calls = [PARIS, FakeCall("call_t1", "get_time", "{}")]
        up.tool_calls_json(calls, text="Two calls.")
        answer = await ask(
            gateway, "async-stream", messages=[user(QUESTION)], tools=[WEATHER, CLOCK]
        )
        assert answer.finish_reason == "tool_calls"
        assert answer.content == "Two calls."
        assert [(c.id, c.name) for c in answer.tool_calls] == [
            ("call_w1", "get_weather"),
            ("call_t1", "get_time"),
        ]
        assert [json.loads(c.arguments) for c in answer.tool_calls] == [
            {"city": "Paris", "unit": "c"},
            {},
        ]


# -- parallel calls, streamed -----------------------------------------------------------------

PARALLEL = [
    FakeCall("call_a", "get_weather", '{"city": "Paris", "unit": "c"}'),
    FakeCall("call_b", "get_weather", '{"city": "Reykjavík", "unit": "f"}'),
    FakeCall("call_c", "get_time", '{"zone": "Europe/Oslo", "note": "quote \\" and \\\\"}'),
]


@pytest.mark.parametrize("interleave", [False, True])
@pytest.mark.parametrize("mode", ["async-stream", "sync-stream", "async"])
async def test_parallel_calls_reassemble_into_valid_json(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI, mode: Mode, interleave: bool
) -> None:
    gateway = await start_gateway(upstream_config(state_dir, up, tools=NO_AGENT_TOOLS))
    up.tool_calls(PARALLEL, fragment_chars=3, interleave=interleave)
    answer = await ask(gateway, mode, messages=[user("three at once")], tools=[WEATHER, CLOCK])
    assert answer.finish_reason == "tool_calls"
    assert [(c.id, c.name) for c in answer.tool_calls] == [(c.id, c.name) for c in PARALLEL]
    for got, sent in zip(answer.tool_calls, PARALLEL, strict=True):
        assert json.loads(got.arguments) == json.loads(sent.arguments)
    if mode.endswith("stream"):
        # The fragments went out as they came: many chunks, not one per call.
        fragments = [c for c in answer.chunks if c.choices and c.choices[0].delta.tool_calls]
        assert len(fragments) > 3 * len(PARALLEL)
        usage = answer.chunks[-1]
        assert usage.choices == [] and usage.usage is not None


async def test_parallel_calls_on_the_raw_sse_wire(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI
) -> None:
    gateway = await start_gateway(upstream_config(state_dir, up, tools=NO_AGENT_TOOLS))
    up.tool_calls(PARALLEL, fragment_chars=4, interleave=True)
    body = chat_body(
        user("three at once"),
        tools=[WEATHER, CLOCK],
        stream=True,
        stream_options={"include_usage": True},
    )
    timeout = aiohttp.ClientTimeout(total=WAIT)
    async with (
        aiohttp.ClientSession(timeout=timeout) as http,
        http.post(gateway.url + CHAT_PATH, json=body, headers=gateway.headers()) as resp,
    ):
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        chunks = sse_chunks(await resp.read())
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    *middle, finish, usage = chunks[1:]
    seen: dict[int, str] = {}
    order = []
    for chunk in middle:
        [choice] = chunk["choices"]
        assert choice["finish_reason"] is None
        [call] = choice["delta"]["tool_calls"]  # one fragment per chunk, as it arrived
        assert set(choice["delta"]) == {"tool_calls"}
        index = call["index"]
        order.append(index)
        if index not in seen:
            assert call["id"] == PARALLEL[index].id
            assert call["type"] == "function"
            assert call["function"]["name"] == PARALLEL[index].name
            seen[index] = call["function"].get("arguments", "")
        else:
            assert set(call) == {"index", "function"}, call
            assert set(call["function"]) == {"arguments"}, call
            seen[index] += call["function"]["arguments"]
    assert [json.loads(seen[i]) for i in range(3)] == [json.loads(c.arguments) for c in PARALLEL]
    # Interleaved upstream, interleaved out: fragments are relayed as they come, not per call.
    assert order[:3] == [0, 1, 2] and order[3:6] == [0, 1, 2]
    assert finish["choices"] == [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]
    assert usage["choices"] == []
    assert usage["usage"]["completion_tokens"] > 0
    assert {c["id"] for c in chunks} == {chunks[0]["id"]}


@pytest.mark.parametrize("wire_index", [0, OMIT], ids=["all-index-0", "no-index"])
async def test_parallel_calls_from_a_server_that_repeats_or_omits_the_index(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI, wire_index: WireIndex
) -> None:
    """Gemini's OpenAI layer streams parallel calls each under index 0 (or none), a new id
    marking each new call: they must stay separate calls, not merge into invalid JSON."""
    gateway = await start_gateway(upstream_config(state_dir, up, tools=NO_AGENT_TOOLS))
    steps: list[Step] = []
    for index, call in enumerate(PARALLEL):
        steps.append(CallStart(index, call.id, call.name, wire_index=wire_index))
        steps += [ArgsStep(index, p, wire_index=wire_index) for p in fragments(call.arguments, 7)]
    for mode in ("async-stream", "async"):
        up.steps(steps, finish="stop")  # Gemini ends tool calls with "stop" too
        answer = await ask(gateway, mode, messages=[user("three")], tools=[WEATHER, CLOCK])
        assert answer.finish_reason == "tool_calls", mode
        assert [(c.id, c.name) for c in answer.tool_calls] == [(c.id, c.name) for c in PARALLEL]
        assert [json.loads(c.arguments) for c in answer.tool_calls] == [
            json.loads(c.arguments) for c in PARALLEL
        ]


async def test_parallel_calls_through_anthropic_streamed(
    start_gateway: StartGateway, state_dir: Path
) -> None:
    async with FakeAnthropic() as up:
        gateway = await start_gateway(upstream_config(state_dir, up, tools=NO_AGENT_TOOLS))
        calls = [
            FakeCall("toolu_a", "get_weather", '{"city": "Paris"}'),
            FakeCall("toolu_b", "get_time", '{"zone": "UTC"}'),
        ]
        up.tool_calls(calls, text="Checking both.", fragment_chars=2)
        answer = await ask(gateway, "async-stream", messages=[user("both")], tools=[WEATHER, CLOCK])
        assert answer.content == "Checking both."
        assert answer.finish_reason == "tool_calls"
        assert [(c.id, c.name, json.loads(c.arguments)) for c in answer.tool_calls] == [
            ("toolu_a", "get_weather", {"city": "Paris"}),
            ("toolu_b", "get_time", {"zone": "UTC"}),
        ]

        up.stream(["Done."])
        messages = [
            user("both"),
            assistant_calls(*calls, content="Checking both."),
            tool_result("toolu_a", "sunny"),
            tool_result("toolu_b", "12:00"),
        ]
        done = await ask(gateway, "async", messages=messages, tools=[WEATHER, CLOCK])
        assert done.content == "Done."
        # Both results in one user message, right after the assistant's tool_use blocks.
        assert up.requests[1].messages[-1] == {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_a", "content": "sunny"},
                {"type": "tool_result", "tool_use_id": "toolu_b", "content": "12:00"},
            ],
        }
        assert up.refusals == []


# -- tool_choice and parallel_tool_calls ------------------------------------------------------

NAMED = {"type": "function", "function": {"name": "get_time"}}


# (request fields, what an OpenAI upstream gets, what an Anthropic upstream gets as tool_choice)
CHOICES: list[tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]] = [
    ({}, {}, None),
    ({"tool_choice": "auto"}, {"tool_choice": "auto"}, {"type": "auto"}),
    ({"tool_choice": "none"}, {"tool_choice": "none"}, {"type": "none"}),
    ({"tool_choice": "required"}, {"tool_choice": "required"}, {"type": "any"}),
    ({"tool_choice": NAMED}, {"tool_choice": NAMED}, {"type": "tool", "name": "get_time"}),
    (
        {"parallel_tool_calls": False},
        {"parallel_tool_calls": False},
        {"type": "auto", "disable_parallel_tool_use": True},
    ),
    ({"parallel_tool_calls": True}, {"parallel_tool_calls": True}, None),
    (
        {"tool_choice": "required", "parallel_tool_calls": False},
        {"tool_choice": "required", "parallel_tool_calls": False},
        {"type": "any", "disable_parallel_tool_use": True},
    ),
    (
        {"tool_choice": NAMED, "parallel_tool_calls": False},
        {"tool_choice": NAMED, "parallel_tool_calls": False},
        {"type": "tool", "name": "get_time", "disable_parallel_tool_use": True},
    ),
    # "none" allows no call at all; Anthropic's none takes no other field.
    (
        {"tool_choice": "none", "parallel_tool_calls": False},
        {"tool_choice": "none", "parallel_tool_calls": False},
        {"type": "none"},
    ),
]


@pytest.mark.parametrize("fake", [FakeOpenAI, FakeAnthropic])
async def test_tool_choice_and_parallel_calls_are_forwarded(
    start_gateway: StartGateway, state_dir: Path, fake: type[FakeUpstream]
) -> None:
    async with fake() as up:
        gateway = await start_gateway(upstream_config(state_dir, up, tools=NO_AGENT_TOOLS))
        for number, (fields, openai_fields, anthropic_choice) in enumerate(CHOICES):
            mode: Mode = MODES[number % len(MODES)]
            reply = await ask(
                gateway, mode, messages=[user("what time is it")], tools=[WEATHER, CLOCK], **fields
            )
            assert reply.content == "Hello from fake upstream", (fields, up.refusals)
            sent = up.requests[-1]
            if isinstance(up, FakeAnthropic):
                assert sent.tool_choice == anthropic_choice, fields
                assert "parallel_tool_calls" not in sent.json
                assert [t["name"] for t in sent.tools or ()] == ["get_weather", "get_time"]
            else:
                forwarded = {k: sent.json[k] for k in openai_fields if k in sent.json}
                assert forwarded == openai_fields, fields
                assert set(sent.json) & {"tool_choice", "parallel_tool_calls"} == set(
                    openai_fields
                ), fields
                assert sent.tools == [WEATHER, CLOCK]
        assert up.refusals == []


# -- tools across a stored session ------------------------------------------------------------

NOON = FakeCall("call_t1", "get_time", '{"zone": "Europe/Paris"}')


@pytest.mark.parametrize("session", ["header", "user"])
@pytest.mark.parametrize("fake", [FakeOpenAI, FakeAnthropic])
async def test_tools_across_a_stored_session(
    start_gateway: StartGateway, state_dir: Path, fake: type[FakeUpstream], session: str
) -> None:
    """Turn 1 ends in two calls; turn 2 sends their results with the whole chat, as SDK clients
    do; turn 3 is a plain question (`header`: the new question alone; `user`: the whole chat
    again, tools too, as an SDK client keeping its own history does). The model sees the stored
    round once, in valid order, and chat.history shows it."""
    if session == "header":
        key = "agent:main:tool-thread"
        routing: dict[str, Any] = {"extra_headers": {"x-moltbot-session-key": key}}
    else:
        key = "agent:main:openai-user:alice"
        routing = {"user": "alice"}
    tools = [WEATHER, CLOCK]
    async with fake() as up:
        gateway = await start_gateway(upstream_config(state_dir, up, tools=NO_AGENT_TOOLS))
        up.tool_calls([PARIS, NOON], fragment_chars=6)
        first = await ask(
            gateway, "async-stream", messages=[user(QUESTION)], tools=tools, **routing
        )
        assert [c.id for c in first.tool_calls] == ["call_w1", "call_t1"]

        up.stream(["Sunny", " at noon."])
        chat = [
            user(QUESTION),
            assistant_calls(PARIS, NOON),
            tool_result("call_w1", "sunny"),
            tool_result("call_t1", "12:00"),
        ]
        second = await ask(gateway, "sync", messages=chat, tools=tools, **routing)
        assert second.content == "Sunny at noon."

        up.stream(["You asked", " about Paris."])
        question = user("What did I ask?")
        if session == "header":
            third = await ask(gateway, "async", messages=[question], **routing)
        else:
            chat += [{"role": "assistant", "content": "Sunny at noon."}, question]
            third = await ask(gateway, "async", messages=chat, tools=tools, **routing)
        assert third.content == "You asked about Paris."
        assert up.refusals == []

        round_trip = model_view(up, up.requests[1])
        assert round_trip == [
            ("user", QUESTION),
            ("call", "call_w1"),
            ("call", "call_t1"),
            ("result", "call_w1", "sunny"),
            ("result", "call_t1", "12:00"),
        ]
        assert model_view(up, up.requests[2]) == [
            *round_trip,
            ("assistant", "Sunny at noon."),
            ("user", "What did I ask?"),
        ]

        client = await GatewayClient.connect(
            gateway.ws_url, token=TOKEN, client_id="test", mode="test", timeout=WAIT
        )
        try:
            history = await client.request("chat.history", {"sessionKey": key}, timeout=WAIT)
        finally:
            await client.close()
    shown = [history_view(m) for m in history["messages"]]
    assert shown == [
        ("user", QUESTION),
        ("assistant", "", [("call_w1", "get_weather"), ("call_t1", "get_time")], "toolUse"),
        ("toolResult", "call_w1", "get_weather", "sunny"),
        ("toolResult", "call_t1", "get_time", "12:00"),
        ("assistant", "Sunny at noon.", [], "stop"),
        ("user", "What did I ask?"),
        ("assistant", "You asked about Paris.", [], "stop"),
    ]
    calls = [b for b in history["messages"][1]["content"] if b["type"] == "toolCall"]
    assert [json.loads(b["arguments"]) for b in calls] == [
        {"city": "Paris", "unit": "c"},
        {"zone": "Europe/Paris"},
    ]


def model_view(up: FakeUpstream, recorded: Any) -> list[tuple[str, ...]]:
    """The conversation an upstream got, flattened to (kind, ...) steps in order: user and
    assistant text, each call, each result. The same for both wire formats."""
    steps: list[tuple[str, ...]] = []
    for message in recorded.messages:
        role = message["role"]
        if role == "system":
            continue
        if role == "tool":
            steps.append(("result", message["tool_call_id"], message["content"]))
            continue
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        for block in blocks:
            if block["type"] == "text" and block["text"]:
                steps.append((role, block["text"]))
            elif block["type"] == "tool_use":
                steps.append(("call", block["id"]))
            elif block["type"] == "tool_result":
                steps.append(("result", block["tool_use_id"], block["content"]))
        steps += [("call", call["id"]) for call in message.get("tool_calls") or ()]
    return steps


def history_view(message: dict[str, Any]) -> tuple[Any, ...]:
    if message["role"] == "toolResult":
        text = message["content"][0]["text"]
        return ("toolResult", message["toolCallId"], message["toolName"], text)
    text = "".join(b["text"] for b in message["content"] if b["type"] == "text")
    if message["role"] == "user":
        return ("user", text)
    calls = [(b["id"], b["name"]) for b in message["content"] if b["type"] == "toolCall"]
    return ("assistant", text, calls, message["stopReason"])
