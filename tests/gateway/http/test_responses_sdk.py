"""POST /v1/responses through the official `openai` SDK (`client.responses`), against the real
gateway and fake upstreams: text, instructions, images, function tools, previous_response_id,
retrieval, and what reached the upstream."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from moltbot.config.model import AgentConfig, ImagesConfig
from tests.conftest import NO_AGENT_TOOLS, StartGateway
from tests.fake_upstreams import FakeCall, FakeOpenAI, FakeUsage
from tests.gateway.http.helpers import agent_of, system_prompt, turns, with_http
from tests.gateway.http.responses_helpers import (
    PNG,
    PNG_URL,
    arguments_of,
    post_responses,
    responses_config,
)

REPORTED = FakeUsage(input_tokens=11, output_tokens=7, cache_read_tokens=5)
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
    "strict": True,
}


async def test_text_in_text_out(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI
) -> None:
    gateway = await start_gateway(responses_config(state_dir, up))
    up.stream(["Hello", " there"], usage=REPORTED)
    before = int(time.time())
    async with gateway.openai() as client:
        response = await client.responses.create(model="moltbot", input="Say hello")
    assert response.id.startswith("resp_") and len(response.id) > len("resp_")
    assert response.object == "response"
    assert response.status == "completed"
    assert response.error is None and response.incomplete_details is None
    assert response.model == "moltbot"
    assert before <= response.created_at <= time.time()
    assert response.output_text == "Hello there"
    [message] = response.output
    assert message.type == "message" and message.role == "assistant"
    assert message.id.startswith("msg_") and message.status == "completed"
    [part] = message.content
    assert (part.type, part.text, part.annotations) == ("output_text", "Hello there", [])
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (16, 7)
    assert response.usage.total_tokens == 23
    assert response.usage.input_tokens_details.cached_tokens == 5
    assert response.usage.output_tokens_details.reasoning_tokens == 0
    assert up.requests[0].messages[-1] == {"role": "user", "content": "Say hello"}


async def test_instructions_and_developer_items_become_system_prompt(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI
) -> None:
    gateway = await start_gateway(responses_config(state_dir, up))
    async with gateway.openai() as client:
        response = await client.responses.create(
            model="moltbot",
            instructions="Answer in French.",
            input=[
                {"role": "developer", "content": "Be brief."},
                {"role": "system", "content": [{"type": "input_text", "text": "No emoji."}]},
                {"role": "user", "content": "Bonjour"},
            ],
        )
    assert response.instructions == "Answer in French."
    assert response.output_text == "Bonjour"
    prompt = system_prompt(up.requests[0])
    assert prompt.index("Answer in French.") < prompt.index("Be brief.") < prompt.index("No emoji.")
    assert turns(up.requests[0]) == [("user", "Bonjour")]


async def test_streaming_events_and_the_stream_helper(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI
) -> None:
    gateway = await start_gateway(responses_config(state_dir, up))
    up.stream(["One", " two", " three"], usage=REPORTED)
    up.stream(["Four", " five"])
    async with gateway.openai() as client:
        stream = await client.responses.create(model="moltbot", input="count", stream=True)
        events = [event async for event in stream]
        async with client.responses.stream(model="moltbot", input="more") as helper:
            deltas = [e.delta async for e in helper if e.type == "response.output_text.delta"]
            final = await helper.get_final_response()
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "One two three"
    completed = events[-1].response  # type: ignore[union-attr]
    assert completed.output_text == "One two three"
    assert completed.usage is not None and completed.usage.output_tokens == 7
    assert {e.response.id for e in events if hasattr(e, "response")} == {completed.id}
    assert deltas == ["Four", " five"]
    assert final.output_text == "Four five" and final.status == "completed"


async def test_an_image_reaches_the_upstream(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI
) -> None:
    gateway = await start_gateway(responses_config(state_dir, up, images=True))
    up.stream(["A dot."])
    async with gateway.openai() as client:
        response = await client.responses.create(
            model="moltbot",
            input=[
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "What is this?"},
                        {"type": "input_image", "image_url": PNG_URL, "detail": "auto"},
                    ],
                }
            ],
        )
    assert response.output_text == "A dot."
    assert up.requests[0].messages[-1] == {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": PNG_URL}},
        ],
    }


async def test_a_function_tool_round_trip(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI
) -> None:
    gateway = await start_gateway(responses_config(state_dir, up, tools=NO_AGENT_TOOLS))
    up.tool_calls([FakeCall("call_w1", "get_weather", '{"city": "Paris"}')], text="Let me check.")
    up.stream(["Sunny", " in", " Paris."])
    question = {"role": "user", "content": "Weather in Paris?"}
    async with gateway.openai() as client:
        first = await client.responses.create(
            model="moltbot", input=[question], tools=[WEATHER_TOOL]
        )
        message, call = first.output
        assert message.type == "message" and first.output_text == "Let me check."
        assert call.type == "function_call"
        assert (call.call_id, call.name, call.arguments) == (
            "call_w1",
            "get_weather",
            '{"city": "Paris"}',
        )
        assert call.id is not None and call.id.startswith("fc_") and call.status == "completed"
        assert first.status == "completed"
        echoed = [item.model_dump(exclude_none=True) for item in first.output]
        result = {"type": "function_call_output", "call_id": "call_w1", "output": "21C, sunny"}
        second = await client.responses.create(
            model="moltbot", input=[question, *echoed, result], tools=[WEATHER_TOOL]
        )
    assert second.output_text == "Sunny in Paris."
    sent_tools = up.requests[0].json["tools"]
    assert sent_tools == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The weather in a city",
                "parameters": WEATHER_TOOL["parameters"],
            },
        }
    ]
    follow_up = up.requests[1].messages[1:]  # after the system prompt
    assert follow_up == [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {
                    "id": "call_w1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_w1", "content": "21C, sunny"},
    ]


async def test_streamed_tool_calls_then_previous_response_id_with_outputs_only(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI
) -> None:
    gateway = await start_gateway(responses_config(state_dir, up))
    up.tool_calls(
        [
            FakeCall("c1", "get_weather", '{"city": "Oslo"}'),
            FakeCall("c2", "get_weather", '{"city": "Rome"}'),
        ]
    )
    up.stream(["Cold", " and", " warm."])
    async with gateway.openai() as client:
        async with client.responses.stream(
            model="moltbot", input="Oslo and Rome?", tools=[WEATHER_TOOL]
        ) as stream:
            events = [event async for event in stream]
            first = await stream.get_final_response()
        outputs = [
            {"type": "function_call_output", "call_id": "c1", "output": "-3C"},
            {"type": "function_call_output", "call_id": "c2", "output": "24C"},
        ]
        second = await client.responses.create(
            model="moltbot", input=outputs, previous_response_id=first.id, tools=[WEATHER_TOOL]
        )
    calls = [item for item in first.output if item.type == "function_call"]
    assert [(c.call_id, c.arguments) for c in calls] == [
        ("c1", '{"city": "Oslo"}'),
        ("c2", '{"city": "Rome"}'),
    ]
    argument_deltas = [e for e in events if e.type == "response.function_call_arguments.delta"]
    assert "".join(e.delta for e in argument_deltas if e.output_index == 0) == '{"city": "Oslo"}'
    assert second.output_text == "Cold and warm."
    assert second.previous_response_id == first.id
    sent = up.requests[1].messages[1:]
    assert sent[0] == {"role": "user", "content": "Oslo and Rome?"}
    assert arguments_of(up.requests[1]) == [{"city": "Oslo"}, {"city": "Rome"}]
    assert sent[2:] == [
        {"role": "tool", "tool_call_id": "c1", "content": "-3C"},
        {"role": "tool", "tool_call_id": "c2", "content": "24C"},
    ]


async def test_previous_response_id_continues_the_conversation(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI
) -> None:
    gateway = await start_gateway(responses_config(state_dir, up))
    async with gateway.openai() as client:
        first = await client.responses.create(model="moltbot", input="My name is Ada")
        second = await client.responses.create(
            model="moltbot", input="What is my name?", previous_response_id=first.id
        )
        third = await client.responses.create(
            model="moltbot", input="And again?", previous_response_id=second.id, stream=True
        )
        last = [event async for event in third][-1]
    assert second.previous_response_id == first.id
    assert turns(up.requests[1]) == [
        ("user", "My name is Ada"),
        ("assistant", "My name is Ada"),
        ("user", "What is my name?"),
    ]
    assert turns(up.requests[2])[-3:] == [
        ("user", "What is my name?"),
        ("assistant", "What is my name?"),
        ("user", "And again?"),
    ]
    assert last.type == "response.completed"
    # Without previous_response_id each request is a conversation of its own.
    async with gateway.openai() as client:
        await client.responses.create(model="moltbot", input="Fresh start")
    assert turns(up.requests[3]) == [("user", "Fresh start")]


async def test_previous_response_id_and_retrieval_survive_a_restart(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI
) -> None:
    config = responses_config(state_dir, up)
    before = await start_gateway(config)
    async with before.openai() as client:
        first = await client.responses.create(model="moltbot", input="Remember 42")
    await before.stop()
    after = await start_gateway(config)  # a new app on the same state dir
    async with after.openai() as client:
        second = await client.responses.create(
            model="moltbot", input="What number?", previous_response_id=first.id
        )
        retrieved = await client.responses.retrieve(first.id)
    assert second.status == "completed"
    assert turns(up.requests[1]) == [
        ("user", "Remember 42"),
        ("assistant", "Remember 42"),
        ("user", "What number?"),
    ]
    assert retrieved.model_dump() == first.model_dump()


async def test_a_cut_answer_is_incomplete(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI
) -> None:
    gateway = await start_gateway(responses_config(state_dir, up))
    up.stream(["cut", " short"], finish="length")
    up.stream(["cut", " again"], finish="length")
    async with gateway.openai() as client:
        whole = await client.responses.create(
            model="moltbot", input="long story", max_output_tokens=2
        )
        stream = await client.responses.create(
            model="moltbot", input="long story", max_output_tokens=2, stream=True
        )
        events = [event async for event in stream]
    assert whole.status == "incomplete" and whole.max_output_tokens == 2
    assert whole.incomplete_details is not None
    assert whole.incomplete_details.reason == "max_output_tokens"
    assert whole.output_text == "cut short" and whole.output[0].status == "incomplete"
    assert up.requests[0].json["max_tokens"] == 2
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.status == "incomplete"  # type: ignore[union-attr]


async def test_sampling_and_tool_settings_reach_the_upstream_and_are_echoed(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI
) -> None:
    gateway = await start_gateway(responses_config(state_dir, up))
    async with gateway.openai() as client:
        response = await client.responses.create(
            model="moltbot",
            input="hi",
            temperature=0.3,
            top_p=0.9,
            tools=[WEATHER_TOOL],
            tool_choice={"type": "function", "name": "get_weather"},
            parallel_tool_calls=False,
            metadata={"ticket": "T-1"},
            reasoning={"effort": "low"},
            truncation="auto",
            include=[],
            text={"format": {"type": "text"}},
        )
    sent = up.requests[0].json
    assert (sent["temperature"], sent["top_p"]) == (0.3, 0.9)
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert sent["parallel_tool_calls"] is False
    assert (response.temperature, response.top_p) == (0.3, 0.9)
    assert response.parallel_tool_calls is False
    assert response.tool_choice.type == "function"  # type: ignore[union-attr]
    assert [t.name for t in response.tools] == ["get_weather"]  # type: ignore[union-attr]
    assert response.metadata == {"ticket": "T-1"}
    assert response.truncation == "auto"


async def test_user_keeps_a_session_and_the_model_picks_the_agent(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI
) -> None:
    agents = (AgentConfig(id="main", default=True), AgentConfig(id="beta"))
    gateway = await start_gateway(responses_config(state_dir, up, agents=agents))
    async with gateway.openai() as client:
        await client.responses.create(model="moltbot/beta", input="first", user="Bob")
        await client.responses.create(model="moltbot/beta", input="second", user="bob")
        await client.responses.create(
            model="moltbot", input="third", extra_headers={"x-moltbot-agent-id": "beta"}
        )
    assert [agent_of(r) for r in up.requests] == ["beta", "beta", "beta"]
    assert turns(up.requests[1]) == [("user", "first"), ("assistant", "first"), ("user", "second")]
    assert turns(up.requests[2]) == [("user", "third")]
    info = await gateway.runtime.store.get("agent:beta:openai-user:bob")
    assert info is not None and info.turns == 2


async def test_store_false_keeps_nothing(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI
) -> None:
    gateway = await start_gateway(responses_config(state_dir, up))
    async with gateway.openai() as client:
        response = await client.responses.create(model="moltbot", input="secret", store=False)
        kept = await client.responses.create(model="moltbot", input="kept")
    assert response.store is False and kept.store is True
    sessions, total = await gateway.runtime.store.list()
    assert total == 1 and sessions[0].key.startswith("agent:main:openresponses:")
    assert await gateway.runtime.store.get_response(response.id) is None
    assert await gateway.runtime.store.get_response(kept.id) is not None


@pytest.fixture
async def image_server() -> AsyncIterator[str]:
    """A loopback HTTP server with /dot.png and /page (HTML); yields its base URL."""
    app = web.Application()

    async def dot(request: web.Request) -> web.Response:
        return web.Response(body=PNG, content_type="image/png")

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="<html></html>", content_type="text/html")

    app.router.add_get("/dot.png", dot)
    app.router.add_get("/page", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def test_image_urls_are_fetched_when_the_config_allows(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI, image_server: str
) -> None:
    images = ImagesConfig(allow_url=True, allowed_hosts=("127.0.0.1",))
    gateway = await start_gateway(
        with_http(responses_config(state_dir, up, images=True), images=images)
    )
    url = f"{image_server}/dot.png"
    async with gateway.openai() as client:
        response = await client.responses.create(
            model="moltbot",
            input=[{"role": "user", "content": [{"type": "input_image", "image_url": url}]}],
        )
    assert response.status == "completed"
    [part] = up.requests[0].messages[-1]["content"]
    assert part == {"type": "image_url", "image_url": {"url": PNG_URL}}
    # Not an image: refused before any model call, naming the part.
    elsewhere = f"{image_server}/page"
    reply = await post_responses(
        gateway,
        {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": elsewhere}]}]},
    )
    assert reply.status == 400
    assert reply.error["param"] == "input[0].content[0].image_url"
    assert reply.error["code"] == "image_fetch_failed"
    assert len(up.requests) == 1
