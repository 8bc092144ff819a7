"""The tool loop through the real server: rounds and their cap, client tools beside the
agent's, streaming, tool events on a following WebSocket, errors as results, usage, policy."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

import aiohttp
import openai
import pytest

from moltbot.client import GatewayClient
from moltbot.config.model import AgentConfig, ToolRules
from tests.conftest import TOKEN
from tests.fake_tool_upstream import Call, Reply, SeenRequest, ToolUpstream, in_order
from tests.tools.conftest import answer_text, chat, function_tool, tool_config

FILE_TOOLS = ["read", "write", "edit", "ls", "find"]


async def test_the_round_cap_withholds_the_agent_tools(state_dir, workspace, start_gateway):
    def script(request: SeenRequest) -> Reply:
        if "ls" in request.tool_names():
            return Reply(text="looking", calls=(Call("ls", {}),))
        return Reply(text="giving up")

    async with ToolUpstream(script) as up:
        gateway = await start_gateway(tool_config(state_dir, up, workspace, max_tool_rounds=2))
        answer = await chat(gateway)
    assert len(up.requests) == 3
    assert [len(r.tool_results()) for r in up.requests] == [0, 1, 1]
    assert up.requests[2].tool_names() == []  # the last call: no agent tools
    assert "used all the tool rounds" in up.requests[2].system()
    assert "used all the tool rounds" not in up.requests[1].system()
    assert answer_text(answer) == "looking\n\nlooking\n\ngiving up"
    assert answer["choices"][0]["finish_reason"] == "stop"


async def test_a_model_that_calls_anyway_gets_not_run(state_dir, workspace, start_gateway):
    script = in_order(*[Reply(calls=(Call("ls", {}),))] * 5)
    async with ToolUpstream(script) as up:
        config = tool_config(state_dir, up, workspace, max_tool_rounds=1)
        gateway = await start_gateway(config)
        answer = await chat(gateway, session="agent:main:cap")
    assert len(up.requests) == 2  # one round, then the call without tools, then the end
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert not answer["choices"][0]["message"].get("tool_calls")
    stored = await gateway.runtime.store.messages("agent:main:cap")
    assert [m.role for m in stored] == ["user", "assistant", "tool", "assistant", "tool"]
    assert stored[-1].message.is_error
    assert stored[-1].content.startswith("error: not run: this turn used its 1 tool rounds")
    assert stored[3].model == "up/m1"  # the reply is the last assistant message


async def test_client_tools_end_the_run_after_the_agent_tools_ran(
    state_dir, workspace, start_gateway
):
    (workspace / "city.txt").write_text("Oslo")
    session = "agent:main:weather"
    first = Reply(
        text="Checking.",
        calls=(Call("read", {"path": "city.txt"}), Call("get_weather", {"city": "Oslo"})),
    )
    script = in_order(first, then="It rains in Oslo.")
    async with ToolUpstream(script) as up:
        gateway = await start_gateway(tool_config(state_dir, up, workspace))
        tools = [function_tool("get_weather")]
        answer = await chat(gateway, "weather?", session=session, tools=tools)
        choice = answer["choices"][0]
        assert choice["finish_reason"] == "tool_calls"
        assert choice["message"]["content"] == "Checking."
        (call,) = choice["message"]["tool_calls"]
        assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Oslo"}'}
        assert len(up.requests) == 1
        assert up.requests[0].tool_names() == [
            "get_weather",
            *FILE_TOOLS,
            "exec",
            "web_fetch",
            "sessions_list",
            "sessions_history",
        ]
        # The client runs its tool and sends the whole chat back, with the result.
        follow_up = [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": "Checking.", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "content": "rain"},
        ]
        final = await chat(gateway, session=session, messages=follow_up, tools=tools)
    assert answer_text(final) == "It rains in Oslo."
    wire = up.requests[1].messages
    assert [m["role"] for m in wire] == ["system", "user", "assistant", "tool", "tool"]
    assert [c["function"]["name"] for c in wire[2]["tool_calls"]] == ["read", "get_weather"]
    assert [m["content"] for m in wire[3:]] == ["Oslo", "rain"]
    stored = await gateway.runtime.store.messages(session)
    assert [m.role for m in stored] == ["user", "assistant", "tool", "tool", "assistant"]


async def test_streams_carry_text_and_client_calls_only(state_dir, workspace, start_gateway):
    first = Reply(text="Let me look.", calls=(Call("ls", {}),))
    second = Reply(text="Now the client.", calls=(Call("ls", {}), Call("notify", {"x": 1})))
    async with ToolUpstream(in_order(first, second)) as up:
        gateway = await start_gateway(tool_config(state_dir, up, workspace))
        client = gateway.openai()
        stream = await client.chat.completions.create(
            model="moltbot",
            messages=[{"role": "user", "content": "go"}],
            tools=[function_tool("notify")],  # type: ignore[list-item]
            stream=True,
        )
        text, calls, finish = "", {}, None
        async for chunk in stream:
            delta = chunk.choices[0].delta if chunk.choices else None
            if delta is not None and delta.content:
                text += delta.content
            for call in (delta.tool_calls or []) if delta is not None else []:
                entry = calls.setdefault(call.index, {"name": "", "arguments": ""})
                entry["name"] += call.function.name or ""
                entry["arguments"] += call.function.arguments or ""
            if chunk.choices and chunk.choices[0].finish_reason:
                finish = chunk.choices[0].finish_reason
    assert text == "Let me look.\n\nNow the client."
    assert calls == {0: {"name": "notify", "arguments": '{"x": 1}'}}  # index 0: the client's
    assert finish == "tool_calls"
    assert len(up.requests[1].tool_results()) == 1 and len(up.requests) == 2


async def test_a_client_tool_named_like_an_agent_tool_is_refused(
    state_dir, workspace, start_gateway
):
    async with ToolUpstream(in_order()) as up:
        gateway = await start_gateway(tool_config(state_dir, up, workspace))
        answer = await chat(gateway, tools=[function_tool("read")], status=400)
    assert answer["error"]["param"] == "tools"
    assert answer["error"]["code"] == "tool_name_clash"
    assert "'read'" in answer["error"]["message"]
    assert up.requests == []


async def test_a_following_websocket_sees_the_tool_events(state_dir, workspace, start_gateway):
    (workspace / "a.txt").write_text("A")
    calls = (Call("read", {"path": "a.txt"}), Call("read", {"path": "../etc/passwd"}))
    async with ToolUpstream(in_order(Reply(calls=calls))) as up:
        gateway = await start_gateway(tool_config(state_dir, up, workspace))
        client = await GatewayClient.connect(
            gateway.ws_url, token=TOKEN, client_id="test", mode="test"
        )
        try:
            await client.request("agent.follow", {"sessionKey": "agent:main:watched"})
            await chat(gateway, session="agent:main:watched")
            events = await agent_events_until_end(client)
        finally:
            await client.close()
    tool = [e["data"] for e in events if e["stream"] == "tool"]
    ids = [c.id for c in (await stored_calls(gateway, "agent:main:watched"))]
    # Both reads run side by side: both start before either ends.
    assert [d["phase"] for d in tool] == ["start", "start", "result", "result"]
    assert [d["toolCallId"] for d in tool[:2]] == ids and {d["name"] for d in tool} == {"read"}
    starts = {d["toolCallId"]: d for d in tool if d["phase"] == "start"}
    results = {d["toolCallId"]: d for d in tool if d["phase"] == "result"}
    assert starts[ids[0]]["args"] == {"path": "a.txt"}
    assert results[ids[0]]["isError"] is False
    assert results[ids[0]]["result"] == "read a.txt (lines 1-1)"
    assert results[ids[1]]["isError"] is True
    assert "outside the workspace" in results[ids[1]]["result"]
    assert isinstance(results[ids[1]]["meta"]["durationMs"], int)
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(seqs) + 1))


async def agent_events_until_end(client: GatewayClient) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    async with asyncio.timeout(10):
        while True:
            event = await client.next_event()
            assert event is not None
            if event.name != "agent":
                continue
            events.append(event.payload)
            data = event.payload["data"]
            if event.payload["stream"] == "lifecycle" and data.get("phase") in ("end", "error"):
                return events


async def stored_calls(gateway: Any, key: str) -> list[Any]:
    return [c for m in await gateway.runtime.store.messages(key) for c in m.message.tool_calls]


async def test_bad_calls_are_results_the_model_reads(state_dir, workspace, start_gateway):
    calls = (
        Call("no_such_tool", {}),
        Call("read", "{not json"),
        Call("read", "[1, 2]"),
        Call("read", {"path": 5}),
        Call("read", {}),
    )
    async with ToolUpstream(in_order(Reply(calls=calls), then="recovered")) as up:
        config = tool_config(state_dir, up, workspace, rules=ToolRules())
        answer = await chat(await start_gateway(config))
    assert answer_text(answer) == "recovered"
    unknown, not_json, not_object, wrong_type, missing = up.requests[1].tool_results()
    assert unknown == (
        "error: there is no tool 'no_such_tool' available to this agent "
        "(available: read, write, edit, ls, find)"
    )
    assert not_json.startswith("error: the arguments of read are not valid JSON")
    assert not_object == "error: the arguments of read must be a JSON object"
    assert wrong_type == "error: read: argument 'path' must be a string"
    assert missing == "error: read: missing required argument 'path'"


async def test_usage_counts_every_model_call(state_dir, workspace, start_gateway):
    script = in_order(Reply(calls=(Call("ls", {}),)), Reply(calls=(Call("ls", {}),)))
    async with ToolUpstream(script) as up:
        answer = await chat(await start_gateway(tool_config(state_dir, up, workspace)))
    assert len(up.requests) == 3
    assert answer["usage"]["prompt_tokens"] == 30 and answer["usage"]["completion_tokens"] == 15


async def test_each_agent_level_only_narrows(state_dir, workspace, start_gateway):
    agents = (
        AgentConfig(id="main", default=True),
        AgentConfig(id="reader", tools=ToolRules(allow=("read", "ls", "exec"))),
        AgentConfig(id="shell", tools=ToolRules(profile="full", deny=("group:fs",))),
    )
    top = ToolRules(profile="coding", deny=("sessions_*",))
    async with ToolUpstream(in_order()) as up:
        config = tool_config(state_dir, up, workspace, rules=top, agents=agents)
        gateway = await start_gateway(config)
        for model in ("moltbot", "moltbot/reader", "moltbot/shell"):
            async with aiohttp.ClientSession() as http:
                body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
                async with http.post(
                    f"{gateway.url}/v1/chat/completions",
                    json=body,
                    headers={"Authorization": f"Bearer {TOKEN}"},
                ) as response:
                    assert response.status == 200, await response.text()
    offered = [r.tool_names() for r in up.requests]
    assert offered == [[*FILE_TOOLS, "exec"], ["read", "ls", "exec"], ["exec"]]


async def test_tool_results_are_stored_with_their_error_flag(state_dir, workspace, start_gateway):
    calls = (Call("read", {"path": "missing.txt"}), Call("ls", {}))
    async with ToolUpstream(in_order(Reply(calls=calls))) as up:
        gateway = await start_gateway(tool_config(state_dir, up, workspace))
        await chat(gateway, session="agent:main:flags")
        client = await GatewayClient.connect(
            gateway.ws_url, token=TOKEN, client_id="test", mode="test"
        )
        try:
            history = await client.request("chat.history", {"sessionKey": "agent:main:flags"})
        finally:
            await client.close()
    results = [m for m in history["messages"] if m["role"] == "toolResult"]
    assert [r["isError"] for r in results] == [True, False]
    assert json.loads(json.dumps(results[0]["content"]))[0]["text"].startswith("error: ")


def test_tool_start_events_bound_their_arguments() -> None:
    from moltbot.agents.events import TOOL_EVENT_ARGS_CHARS, ToolStarted, event_data

    long = json.dumps({"content": "x" * 20_000})
    data = event_data(ToolStarted("c1", "write", long))
    assert data["argsTruncated"] is True and data["args"] == long[:TOOL_EVENT_ARGS_CHARS]
    assert event_data(ToolStarted("c2", "read", "{bad"))["args"] == "{bad"
    assert event_data(ToolStarted("c3", "ls", ""))["args"] == {}


async def test_responses_client_tools_beside_agent_tools(state_dir, workspace, start_gateway):
    (workspace / "city.txt").write_text("Oslo")
    first = Reply(
        text="Checking.",
        calls=(Call("read", {"path": "city.txt"}), Call("get_weather", {"city": "Oslo"})),
    )
    weather = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}
    clash = {"type": "function", "name": "ls", "parameters": {"type": "object"}}
    async with ToolUpstream(in_order(first, then="It rains in Oslo.")) as up:
        config = tool_config(state_dir, up, workspace)
        http = dataclasses.replace(config.gateway.http, responses_enabled=True)
        config = dataclasses.replace(config, gateway=dataclasses.replace(config.gateway, http=http))
        gateway = await start_gateway(config)
        async with gateway.openai() as client:
            response = await client.responses.create(
                model="moltbot", input="weather?", tools=[weather]
            )
            calls = [item for item in response.output if item.type == "function_call"]
            assert [(c.name, c.arguments) for c in calls] == [("get_weather", '{"city": "Oslo"}')]
            follow = await client.responses.create(
                model="moltbot",
                previous_response_id=response.id,
                input=[
                    {"type": "function_call_output", "call_id": calls[0].call_id, "output": "rain"}
                ],
                tools=[weather],
            )
            with pytest.raises(openai.BadRequestError) as refused:
                await client.responses.create(model="moltbot", input="hi", tools=[clash])
    assert response.output_text == "Checking."
    assert follow.output_text == "It rains in Oslo."
    assert [m["role"] for m in up.requests[1].messages] == [
        "system",
        "user",
        "assistant",
        "tool",
        "tool",
    ]
    assert refused.value.param == "tools" and refused.value.code == "tool_name_clash"


async def test_a_client_resending_the_chat_after_tool_rounds_gets_each_turn_once(
    state_dir, workspace, start_gateway
):
    script = in_order(Reply(text="Let me look.", calls=(Call("ls", {}),)), then="Found it.")
    session = "agent:main:resend"
    async with ToolUpstream(script) as up:
        gateway = await start_gateway(tool_config(state_dir, up, workspace))
        first = answer_text(await chat(gateway, "one", session=session))
        assert first == "Let me look.\n\nFound it."
        chat_so_far = [
            {"role": "user", "content": "one"},
            {"role": "assistant", "content": first},  # the reply as the client saw it
            {"role": "user", "content": "two"},
        ]
        await chat(gateway, session=session, messages=chat_so_far)
    wire = [(m["role"], m.get("content")) for m in up.requests[-1].messages[1:]]
    assert wire == [
        ("user", "one"),
        ("assistant", "Let me look."),
        ("tool", "(empty directory)"),
        ("assistant", "Found it."),
        ("user", "two"),
    ]
