"""Every refusal of the Responses endpoint: OpenAI's error envelope, the right status, and a
`param` naming what to fix. Also: the endpoint's gating, auth and body limit, and what
`previous_response_id` refuses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai
import pytest

from moltbot.gateway.http.responses import RESPONSES_TTL_KEY
from moltbot.gateway.server import build_app
from tests.conftest import ServeApp, StartGateway, make_config
from tests.fake_upstreams import FakeOpenAI
from tests.gateway.http.helpers import request, with_http
from tests.gateway.http.responses_helpers import (
    PNG_URL,
    RESPONSES_PATH,
    post_responses,
    responses_config,
    user_item,
)

TOOL = {"type": "function", "name": "f"}
CALL = {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"}
QUESTION = user_item("q")


def _image(url: str, **extra: Any) -> dict[str, Any]:
    part = {"type": "input_image", "image_url": url, **extra}
    return {"role": "user", "content": [part]}


BAD_REQUESTS: list[tuple[dict[str, Any], str]] = [
    ({}, "input"),
    ({"input": None}, "input"),
    ({"input": 5}, "input"),
    ({"input": []}, "input"),
    ({"input": [{"role": "assistant", "content": "prefill"}]}, "input"),
    ({"input": [{"role": "developer", "content": "rules only"}]}, "input"),
    ({"input": ["hi"]}, "input[0]"),
    ({"input": [{"role": "wizard", "content": "x"}]}, "input[0].role"),
    ({"input": [{"type": "reasoning", "summary": []}]}, "input[0].type"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
    ({"input": [{"type": "web_search_call", "id": "ws_1"}]}, "input[0].type"),
    ({"input": [{"role": "user", "content": 7}]}, "input[0].content"),
    (
        {"input": [{"role": "user", "content": [{"type": "input_text"}]}]},
        "input[0].content[0].text",
    ),
    (
        {"input": [{"role": "user", "content": [{"type": "input_audio"}]}]},
        "input[0].content[0].type",
    ),
    (
        {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f1"}]}]},
        "input[0].content[0].type",
    ),
    (
        {"input": [{"role": "system", "content": [{"type": "input_image"}]}]},
        "input[0].content[0].type",
    ),
    ({"input": [_image("https://example.com/cat.png")]}, "input[0].content[0].image_url"),
    ({"input": [_image("data:image/png;base64,!!!")]}, "input[0].content[0].image_url"),
    ({"input": [_image("data:image/tiff;base64,AAAA")]}, "input[0].content[0].image_url"),
    ({"input": [_image(PNG_URL, file_id="file_1")]}, "input[0].content[0].file_id"),
    (
        {"input": [{"role": "user", "content": [{"type": "input_image"}]}]},
        "input[0].content[0].image_url",
    ),
    ({"input": [QUESTION, {**CALL, "call_id": None}]}, "input[1].call_id"),
    ({"input": [QUESTION, {**CALL, "name": ""}]}, "input[1].name"),
    ({"input": [QUESTION, {**CALL, "arguments": {"a": 1}}]}, "input[1].arguments"),
    ({"input": [QUESTION, CALL, CALL]}, "input[2].call_id"),
    (
        {"input": [QUESTION, {"type": "function_call_output", "call_id": "c9", "output": "x"}]},
        "input[1].call_id",
    ),
    (
        {"input": [{"type": "function_call_output", "call_id": "c9", "output": "x"}]},
        "input[0].call_id",
    ),
    (
        {
            "input": [
                QUESTION,
                CALL,
                {"type": "function_call_output", "call_id": "c1", "output": "x"},
                {"type": "function_call_output", "call_id": "c1", "output": "y"},
            ]
        },
        "input[3].call_id",
    ),
    (
        {"input": [QUESTION, CALL, {"type": "function_call_output", "call_id": "c1"}]},
        "input[2].output",
    ),
    (
        {
            "input": [
                QUESTION,
                CALL,
                {
                    "type": "function_call_output",
                    "call_id": "c1",
                    "output": [{"type": "input_image", "image_url": PNG_URL}],
                },
            ]
        },
        "input[2].output[0].type",
    ),
    ({"input": "x", "tools": {"type": "function"}}, "tools"),
    ({"input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type"),
    (
        {"input": "x", "tools": [TOOL, {"type": "file_search", "vector_store_ids": []}]},
        "tools[1].type",
    ),
    ({"input": "x", "tools": [{"type": "computer_use_preview"}]}, "tools[0].type"),
    ({"input": "x", "tools": [{"type": "mcp", "server_label": "s"}]}, "tools[0].type"),
    ({"input": "x", "tools": ["f"]}, "tools[0]"),
    ({"input": "x", "tools": [{"type": "function", "function": {"name": "f"}}]}, "tools[0].name"),
    ({"input": "x", "tools": [{"type": "function", "name": "bad name"}]}, "tools[0].name"),
    ({"input": "x", "tools": [{**TOOL, "parameters": "{}"}]}, "tools[0].parameters"),
    ({"input": "x", "tools": [{**TOOL, "description": 3}]}, "tools[0].description"),
    ({"input": "x", "tools": [{**TOOL, "strict": "yes"}]}, "tools[0].strict"),
    ({"input": "x", "tools": [TOOL, TOOL]}, "tools"),
    ({"input": "x", "tool_choice": "required"}, "tool_choice"),
    ({"input": "x", "tools": [TOOL], "tool_choice": "sometimes"}, "tool_choice"),
    (
        {"input": "x", "tools": [TOOL], "tool_choice": {"type": "function", "name": "g"}},
        "tool_choice",
    ),
    (
        {"input": "x", "tools": [TOOL], "tool_choice": {"type": "allowed_tools", "tools": []}},
        "tool_choice",
    ),
    ({"input": "x", "tools": [TOOL], "tool_choice": {"type": "web_search_preview"}}, "tool_choice"),
    ({"input": "x", "parallel_tool_calls": "yes"}, "parallel_tool_calls"),
    ({"input": "x", "temperature": 2.5}, "temperature"),
    ({"input": "x", "temperature": "hot"}, "temperature"),
    ({"input": "x", "top_p": -0.1}, "top_p"),
    ({"input": "x", "max_output_tokens": 0}, "max_output_tokens"),
    ({"input": "x", "max_output_tokens": 2.5}, "max_output_tokens"),
    ({"input": "x", "stream": "yes"}, "stream"),
    ({"input": "x", "store": 1}, "store"),
    ({"input": "x", "instructions": ["be nice"]}, "instructions"),
    ({"input": "x", "model": 5}, "model"),
    ({"input": "x", "user": 5}, "user"),
    ({"input": "x", "previous_response_id": ""}, "previous_response_id"),
    ({"input": "x", "previous_response_id": 12}, "previous_response_id"),
    ({"input": "x", "metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
    ({"input": "x", "metadata": {"k": 1}}, "metadata.k"),
    ({"input": "x", "text": {"format": {"type": "json_schema", "schema": {}}}}, "text.format.type"),
    ({"input": "x", "text": {"format": {"type": "json_object"}}}, "text.format.type"),
    ({"input": "x", "text": {"verbosity": "loud"}}, "text.verbosity"),
    ({"input": "x", "text": "plain"}, "text"),
    ({"input": "x", "truncation": "sometimes"}, "truncation"),
    ({"input": "x", "reasoning": "high"}, "reasoning"),
    ({"input": "x", "include": "reasoning.encrypted_content"}, "include"),
    ({"input": "x", "top_logprobs": 5}, "top_logprobs"),
    ({"input": "x", "background": True}, "background"),
    ({"input": "x", "max_tool_calls": 0}, "max_tool_calls"),
    ({"input": "x", "conversation": "conv_1"}, "conversation"),
    ({"input": "x", "prompt": {"id": "pmpt_1"}}, "prompt"),
    ({"input": "x", "context_management": [{"type": "compaction"}]}, "context_management"),
    ({"input": "x", "messages": []}, "messages"),
    ({"input": "x", "max_tokens": 10}, "max_tokens"),
]


@pytest.mark.parametrize(("body", "param"), BAD_REQUESTS, ids=[p for _, p in BAD_REQUESTS])
async def test_bad_requests_are_400_naming_the_param(
    start_gateway: StartGateway, state_dir: Path, body: dict[str, Any], param: str
) -> None:
    gateway = await start_gateway(responses_config(state_dir, images=True))
    reply = await post_responses(gateway, body)
    assert reply.status == 400, reply.body
    assert reply.error["type"] == "invalid_request_error"
    assert reply.error["param"] == param, reply.error
    assert reply.error["message"]


async def test_the_sdk_raises_bad_request_naming_the_param(
    start_gateway: StartGateway, state_dir: Path
) -> None:
    gateway = await start_gateway(responses_config(state_dir))
    async with gateway.openai() as client:
        with pytest.raises(openai.BadRequestError) as refused:
            await client.responses.create(
                model="moltbot", input="x", tools=[{"type": "web_search"}]
            )
    assert refused.value.status_code == 400
    assert refused.value.param == "tools[0].type"  # type: ignore[attr-defined]
    assert "web_search" in refused.value.message


@pytest.mark.parametrize(
    "raw", [b"", b"{not json", b"[1, 2]", b'"input"'], ids=["empty", "broken", "array", "string"]
)
async def test_a_body_that_is_not_a_json_object_is_400(
    start_gateway: StartGateway, state_dir: Path, raw: bytes
) -> None:
    gateway = await start_gateway(responses_config(state_dir))
    reply = await post_responses(gateway, raw)
    assert reply.status == 400
    assert reply.error["type"] == "invalid_request_error"


async def test_an_empty_message_is_400_on_input(
    start_gateway: StartGateway, state_dir: Path
) -> None:
    gateway = await start_gateway(responses_config(state_dir))
    reply = await post_responses(gateway, {"input": "   "})
    assert reply.status == 400
    assert (reply.error["param"], reply.error["code"]) == ("input", "empty_message")


async def test_an_image_for_a_text_only_model_is_400_on_input(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI
) -> None:
    gateway = await start_gateway(responses_config(state_dir, up))  # m1 takes text only
    reply = await post_responses(gateway, {"input": [_image(PNG_URL)]})
    assert reply.status == 400
    assert (reply.error["param"], reply.error["code"]) == ("input", "image_input_unsupported")
    assert up.requests == []


async def test_too_many_images_are_refused(start_gateway: StartGateway, state_dir: Path) -> None:
    gateway = await start_gateway(responses_config(state_dir, images=True))
    content = [{"type": "input_image", "image_url": PNG_URL}] * 9
    reply = await post_responses(gateway, {"input": [{"role": "user", "content": content}]})
    assert reply.status == 400
    assert reply.error["param"] == "input[0].content[8].image_url"


async def test_unknown_model_and_agent_are_404(
    start_gateway: StartGateway, state_dir: Path
) -> None:
    gateway = await start_gateway(responses_config(state_dir))
    reply = await post_responses(gateway, {"model": "gpt-4o", "input": "x"})
    assert reply.status == 404
    assert (reply.error["param"], reply.error["code"]) == ("model", "model_not_found")
    reply = await post_responses(gateway, {"input": "x"}, headers={"x-moltbot-agent-id": "nope"})
    assert reply.status == 404 and reply.error["code"] == "model_not_found"


async def test_a_reserved_session_key_is_400(start_gateway: StartGateway, state_dir: Path) -> None:
    gateway = await start_gateway(responses_config(state_dir))
    reply = await post_responses(
        gateway, {"input": "x"}, headers={"x-moltbot-session-key": "cron:nightly"}
    )
    assert reply.status == 400
    assert reply.error["param"] == "x-moltbot-session-key"


async def test_the_endpoint_is_404_unless_enabled(
    start_gateway: StartGateway, state_dir: Path
) -> None:
    gateway = await start_gateway(make_config(state_dir))  # chat completions only
    reply = await post_responses(gateway, {"input": "x"})
    assert reply.status == 404
    assert set(reply.json()["error"]) == {"message", "type", "param", "code"}
    assert (await request(gateway, "GET", f"{RESPONSES_PATH}/resp_1")).status == 404
    chat = {"model": "moltbot", "messages": [{"role": "user", "content": "hi"}]}
    assert (await request(gateway, "POST", "/v1/chat/completions", json=chat)).status == 200


async def test_auth_method_and_body_limit(start_gateway: StartGateway, state_dir: Path) -> None:
    config = with_http(responses_config(state_dir), max_body_bytes=1024)
    gateway = await start_gateway(config)
    for token in (None, "wrong"):
        reply = await post_responses(gateway, {"input": "x"}, token=token)
        assert reply.status == 401 and reply.error["type"] == "unauthorized"
    assert (await request(gateway, "GET", f"{RESPONSES_PATH}/resp_x", headers={})).status == 401
    reply = await request(gateway, "GET", RESPONSES_PATH)
    assert reply.status == 405 and "POST" in reply.headers["Allow"]
    reply = await post_responses(gateway, {"input": "x" * 2000})
    assert reply.status == 413 and reply.error["type"] == "invalid_request_error"


# -- previous_response_id and GET ---------------------------------------------------------------


async def test_an_unknown_previous_response_is_404(
    start_gateway: StartGateway, state_dir: Path
) -> None:
    gateway = await start_gateway(responses_config(state_dir))
    async with gateway.openai() as client:
        with pytest.raises(openai.NotFoundError) as missing:
            await client.responses.create(
                model="moltbot", input="x", previous_response_id="resp_nope"
            )
    assert missing.value.param == "previous_response_id"  # type: ignore[attr-defined]
    assert missing.value.code == "previous_response_not_found"  # type: ignore[attr-defined]
    assert "resp_nope" in missing.value.message


async def test_only_the_latest_response_of_a_session_continues_it(
    start_gateway: StartGateway, state_dir: Path
) -> None:
    gateway = await start_gateway(responses_config(state_dir))
    first = (await post_responses(gateway, {"input": "one"})).json()
    second = await post_responses(gateway, {"input": "two", "previous_response_id": first["id"]})
    assert second.status == 200
    branch = await post_responses(gateway, {"input": "2b", "previous_response_id": first["id"]})
    assert branch.status == 400
    assert branch.error["param"] == "previous_response_id"
    assert branch.error["code"] == "previous_response_not_latest"
    onward = {"input": "three", "previous_response_id": second.json()["id"]}
    assert (await post_responses(gateway, onward)).status == 200


async def test_a_failed_continuation_can_be_retried(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI
) -> None:
    gateway = await start_gateway(responses_config(state_dir, up))
    first = (await post_responses(gateway, {"input": "one"})).json()
    for _ in range(3):
        up.status(500)
    body = {"input": "two", "previous_response_id": first["id"]}
    assert (await post_responses(gateway, body)).status == 502
    retried = await post_responses(gateway, body)  # the failed turn does not move it on
    assert retried.status == 200
    assert retried.json()["output"][0]["content"][0]["text"] == "two"


async def test_expired_responses_are_gone(serve_app: ServeApp, state_dir: Path) -> None:
    config = responses_config(state_dir)
    app = build_app(config)
    app[RESPONSES_TTL_KEY] = 0.0  # expired as soon as saved
    gateway = await serve_app(app, config)
    first = (await post_responses(gateway, {"input": "one"})).json()
    reply = await post_responses(gateway, {"input": "two", "previous_response_id": first["id"]})
    assert reply.status == 404
    assert reply.error["code"] == "previous_response_not_found"
    assert (await request(gateway, "GET", f"{RESPONSES_PATH}/{first['id']}")).status == 404


async def test_a_reset_or_deleted_session_ends_its_responses(
    start_gateway: StartGateway, state_dir: Path
) -> None:
    gateway = await start_gateway(responses_config(state_dir))
    headers = {"x-moltbot-session-key": "agent:main:thread"}
    first = (await post_responses(gateway, {"input": "one"}, headers=headers)).json()
    await gateway.runtime.store.reset("agent:main:thread")
    reply = await post_responses(gateway, {"input": "two", "previous_response_id": first["id"]})
    assert reply.status == 404 and "reset" in reply.error["message"]
    assert (await request(gateway, "GET", f"{RESPONSES_PATH}/{first['id']}")).status == 200
    await gateway.runtime.store.delete("agent:main:thread")
    assert (await request(gateway, "GET", f"{RESPONSES_PATH}/{first['id']}")).status == 404


async def test_previous_response_of_another_session_is_400(
    start_gateway: StartGateway, state_dir: Path
) -> None:
    gateway = await start_gateway(responses_config(state_dir))
    first = (await post_responses(gateway, {"input": "one", "user": "ann"})).json()
    body = {"input": "two", "previous_response_id": first["id"]}
    same = await post_responses(gateway, {**body, "user": "ann"})
    assert same.status == 200
    body["previous_response_id"] = same.json()["id"]
    other = await post_responses(gateway, {**body, "user": "bob"})
    assert other.status == 400 and other.error["param"] == "previous_response_id"
    header = await post_responses(gateway, body, headers={"x-moltbot-session-key": "elsewhere"})
    assert header.status == 400 and header.error["param"] == "previous_response_id"


async def test_outputs_must_answer_the_previous_response_s_calls(
    start_gateway: StartGateway, state_dir: Path
) -> None:
    gateway = await start_gateway(responses_config(state_dir))
    first = (await post_responses(gateway, {"input": "no calls here"})).json()
    output = {"type": "function_call_output", "call_id": "call_x", "output": "42"}
    body = {"input": [output], "previous_response_id": first["id"]}
    reply = await post_responses(gateway, body)
    assert reply.status == 400
    assert reply.error["param"] == "input[0].call_id"
    assert "previous response" in reply.error["message"]


async def test_get_refuses_unknown_ids_and_stream_replays(
    start_gateway: StartGateway, state_dir: Path
) -> None:
    gateway = await start_gateway(responses_config(state_dir))
    reply = await request(gateway, "GET", f"{RESPONSES_PATH}/resp_nope")
    assert reply.status == 404
    assert (reply.error["param"], reply.error["code"]) == ("response_id", "response_not_found")
    first = (await post_responses(gateway, {"input": "one"})).json()
    reply = await request(gateway, "GET", f"{RESPONSES_PATH}/{first['id']}?stream=true")
    assert reply.status == 400 and reply.error["param"] == "stream"
    async with gateway.openai() as client:
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve("resp_nope")


async def test_lone_surrogates_are_refused_naming_the_field(
    start_gateway: StartGateway, state_dir: Path
) -> None:
    gateway = await start_gateway(responses_config(state_dir))
    reply = await post_responses(gateway, '{"input": "bad \\ud800 text"}')
    assert reply.status == 400 and reply.error["param"] == "input"
    json.loads(reply.body)  # the error itself is valid JSON
