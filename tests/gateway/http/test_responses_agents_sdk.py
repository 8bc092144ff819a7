"""The OpenAI Agents SDK (`openai-agents`) against the gateway: an agent with one function tool
runs to completion through /v1/responses, the tool executing on the client's side. The fake
upstream first calls the tool, then answers with what it returned."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from agents import (
    Agent,
    Runner,
    function_tool,
    set_default_openai_api,
    set_default_openai_client,
    set_tracing_disabled,
)
from agents.models import _openai_shared

from tests.conftest import NO_AGENT_TOOLS, StartGateway
from tests.fake_upstreams import FakeCall, FakeOpenAI, RecordedRequest
from tests.gateway.http.helpers import system_prompt
from tests.gateway.http.responses_helpers import responses_config, tool_messages


@pytest.fixture(autouse=True)
def agents_sdk_defaults() -> Iterator[None]:
    """The SDK keeps its defaults in module globals: set them for a test, restore them after.
    Tracing is off (it would upload to OpenAI)."""
    set_tracing_disabled(True)
    set_default_openai_api("responses")
    yield
    _openai_shared.set_default_openai_client(None)  # type: ignore[arg-type]


def _answer(recorded: RecordedRequest) -> str:
    """The second call's answer: what the tool returned, as the model would put it."""
    [result] = [m for m in recorded.messages if m.get("role") == "tool"]
    return f"Here it is: {result['content']}"


@pytest.mark.parametrize("streamed", [False, True], ids=["run", "run_streamed"])
async def test_an_agent_runs_its_function_tool_through_the_gateway(
    start_gateway: StartGateway, state_dir: Path, streamed: bool
) -> None:
    async with FakeOpenAI(reply=_answer) as up:
        gateway = await start_gateway(responses_config(state_dir, up, tools=NO_AGENT_TOOLS))
        up.tool_calls([FakeCall("call_paris", "get_weather", '{"city": "Paris"}')])
        asked: list[str] = []

        @function_tool
        def get_weather(city: str) -> str:
            """The current weather in a city."""
            asked.append(city)
            return f"sunny, 21C in {city}"

        agent = Agent(
            name="Forecaster",
            instructions="Answer with the weather tool.",
            model="moltbot",
            tools=[get_weather],
        )
        async with gateway.openai() as client:
            set_default_openai_client(client, use_for_tracing=False)
            if streamed:
                run = Runner.run_streamed(agent, "What is the weather in Paris?")
                kinds = {event.type async for event in run.stream_events()}
                assert "raw_response_event" in kinds
                final = run.final_output
            else:
                final = (await Runner.run(agent, "What is the weather in Paris?")).final_output
    assert asked == ["Paris"]
    assert final == "Here it is: sunny, 21C in Paris"
    first, second = up.requests
    assert [t["function"]["name"] for t in first.json["tools"]] == ["get_weather"]
    assert "Answer with the weather tool." in system_prompt(first)
    assert first.messages[-1] == {"role": "user", "content": "What is the weather in Paris?"}
    assert tool_messages(second) == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_paris",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_paris", "content": "sunny, 21C in Paris"},
    ]
