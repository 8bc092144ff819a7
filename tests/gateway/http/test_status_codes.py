"""Every status code the endpoint answers before a run starts, with OpenAI's error envelope."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from moltbot.config.model import AgentConfig, RateLimitConfig
from tests.conftest import TOKEN, StartGateway, make_config
from tests.gateway.http.helpers import CHAT_PATH, chat_body, post_chat, request, user, with_http

# -- gating and auth ----------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "wrong-token"], ids=["missing", "wrong"])
async def test_bad_bearer_is_401(
    start_gateway: StartGateway, state_dir: Path, token: str | None
) -> None:
    gateway = await start_gateway(make_config(state_dir))
    reply = await post_chat(gateway, chat_body(), token=token)
    assert reply.status == 401
    assert reply.error["type"] == "unauthorized"
    assert (await post_chat(gateway, chat_body())).status == 200


async def test_repeated_failures_are_429_with_retry_after(
    start_gateway: StartGateway, state_dir: Path
) -> None:
    limit = RateLimitConfig(max_attempts=3, exempt_loopback=False)
    gateway = await start_gateway(make_config(state_dir, rate_limit=limit))
    for _ in range(3):
        assert (await post_chat(gateway, chat_body(), token="nope")).status == 401
    reply = await post_chat(gateway, chat_body())  # even the right token waits now
    assert reply.status == 429
    assert int(reply.headers["Retry-After"]) > 0
    assert reply.error["type"] == "rate_limit_error"


async def test_disabled_endpoint_is_404(start_gateway: StartGateway, state_dir: Path) -> None:
    gateway = await start_gateway(make_config(state_dir, chat=False))
    reply = await post_chat(gateway, chat_body())
    assert reply.status == 404
    assert reply.error["type"] == "not_found_error"


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
@pytest.mark.parametrize("token", [TOKEN, None], ids=["auth", "no-auth"])
async def test_other_methods_are_405_with_allow_post(
    start_gateway: StartGateway, state_dir: Path, method: str, token: str | None
) -> None:
    gateway = await start_gateway(make_config(state_dir))
    reply = await request(gateway, method, CHAT_PATH, headers=gateway.headers(token))
    assert reply.status == 405
    assert reply.headers["Allow"] == "POST"
    assert reply.error["type"] == "invalid_request_error"


# -- the body -----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1001, 200_000, 5_000_000, 40_000_000])
async def test_body_over_max_body_bytes_is_413(
    start_gateway: StartGateway, state_dir: Path, size: int
) -> None:
    config = with_http(make_config(state_dir), max_body_bytes=1000)
    gateway = await start_gateway(config)
    filler = "x" * (size - len('{"model":"moltbot","messages":[{"role":"user","content":""}]}'))
    raw = chat_body(user(filler))
    reply = await post_chat(gateway, raw)
    assert reply.status == 413
    assert reply.error["type"] == "invalid_request_error"
    small = await post_chat(gateway, chat_body(user("fits")))
    assert small.status == 200


async def test_body_at_the_limit_is_accepted(start_gateway: StartGateway, state_dir: Path) -> None:
    gateway = await start_gateway(with_http(make_config(state_dir), max_body_bytes=1000))
    envelope = '{"model":"moltbot","messages":[{"role":"user","content":"%s"}]}'
    raw = envelope % ("y" * (1000 - len(envelope) + 2))
    assert len(raw) == 1000
    assert (await post_chat(gateway, raw)).status == 200


@pytest.mark.parametrize(
    "raw",
    ["{not json", '{"model": "moltbot",', "", "   ", b"\xff\xfe{}"],
    ids=["garbage", "truncated", "empty", "blank", "not-utf8"],
)
async def test_invalid_json_is_400(
    start_gateway: StartGateway, state_dir: Path, raw: str | bytes
) -> None:
    gateway = await start_gateway(make_config(state_dir))
    reply = await post_chat(gateway, raw)
    assert reply.status == 400
    assert reply.error["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    "raw",
    [
        b'{"model":"moltbot","messages":[{"role":"user","content":"x \xed\xa0\x80"}]}',
        b'{"model":"moltbot","user":"\xed\xb2\x80","messages":[{"role":"user","content":"hi"}]}',
        b'{"model":"moltbot","messages":[{"role":"user","content":"\xc3"}]}',
    ],
    ids=["cesu8-high", "cesu8-low-in-user", "cut-sequence"],
)
async def test_undecodable_body_bytes_are_400_naming_the_body(
    start_gateway: StartGateway, state_dir: Path, raw: bytes
) -> None:
    gateway = await start_gateway(make_config(state_dir))
    reply = await post_chat(gateway, raw)
    assert reply.status == 400, reply.body
    assert reply.error["type"] == "invalid_request_error"
    assert reply.error["param"] == "body"
    assert "request body is not valid UTF-8" in reply.error["message"]
    assert (await post_chat(gateway, chat_body())).status == 200


async def test_a_utf8_byte_order_mark_is_tolerated(
    start_gateway: StartGateway, state_dir: Path
) -> None:
    gateway = await start_gateway(make_config(state_dir))
    reply = await post_chat(gateway, b"\xef\xbb\xbf" + json.dumps(chat_body(user("bom"))).encode())
    assert reply.status == 200, reply.body
    assert reply.json()["choices"][0]["message"]["content"] == "bom"


async def test_deeply_nested_json_is_400_not_a_crash(
    start_gateway: StartGateway, state_dir: Path
) -> None:
    gateway = await start_gateway(make_config(state_dir))
    depth = 100_000  # 200 kB of brackets: far below the body limit, far above the parser's stack
    reply = await post_chat(gateway, '{"messages": ' + "[" * depth + "]" * depth + "}")
    assert reply.status == 400
    assert reply.error["type"] == "invalid_request_error"
    assert (await post_chat(gateway, chat_body())).status == 200


@pytest.mark.parametrize("body", [[], ["hi"], "hello", 42, None, True])
async def test_non_object_body_is_400(
    start_gateway: StartGateway, state_dir: Path, body: Any
) -> None:
    gateway = await start_gateway(make_config(state_dir))
    reply = await post_chat(gateway, json.dumps(body).encode())
    assert reply.status == 400
    assert reply.error["type"] == "invalid_request_error"
    assert "object" in reply.error["message"]


WRONG_TYPES = [
    ({"model": 5}, "model"),
    ({"stream": "yes"}, "stream"),
    ({"stream": 1}, "stream"),
    ({"user": 12}, "user"),
    ({"messages": "hi"}, "messages"),
    ({"messages": {"role": "user", "content": "hi"}}, "messages"),
    ({"messages": ["hi"]}, "messages[0]"),
    ({"messages": [{"content": "hi"}]}, "messages[0]"),
    ({"messages": [user("a"), {"role": 1, "content": "b"}]}, "messages[1]"),
    ({"messages": [user(42)]}, "messages[0].content"),
    ({"messages": [user({"text": "hi"})]}, "messages[0].content"),
    ({"messages": [user([{"type": "text", "text": 3}])]}, "messages[0].content[0].text"),
    ({"stream_options": ["include_usage"]}, "stream_options"),
    ({"stream_options": {"include_usage": "true"}}, "stream_options.include_usage"),
    ({"temperature": "hot"}, "temperature"),
    ({"temperature": True}, "temperature"),
    ({"top_p": [1]}, "top_p"),
    ({"max_tokens": "10"}, "max_tokens"),
    ({"max_tokens": 1.5}, "max_tokens"),
    ({"max_completion_tokens": False}, "max_completion_tokens"),
    ({"seed": "7"}, "seed"),
    ({"stop": 7}, "stop"),
    ({"stop": ["ok", 7]}, "stop"),
    ({"presence_penalty": "0"}, "presence_penalty"),
    ({"frequency_penalty": {}}, "frequency_penalty"),
    ({"n": 2}, "n"),
    ({"n": "1"}, "n"),
]


@pytest.mark.parametrize(("fields", "param"), WRONG_TYPES, ids=[p for _, p in WRONG_TYPES])
async def test_wrong_field_type_is_400_naming_the_field(
    start_gateway: StartGateway, state_dir: Path, fields: dict[str, Any], param: str
) -> None:
    gateway = await start_gateway(make_config(state_dir))
    reply = await post_chat(gateway, {**chat_body(), **fields})
    assert reply.status == 400, reply.body
    assert reply.error["type"] == "invalid_request_error"
    assert reply.error["param"] == param


OUT_OF_RANGE = [
    ("temperature", -0.1),
    ("temperature", 2.01),
    ("temperature", 10**400),
    ("temperature", float("nan")),
    ("top_p", float("inf")),
    ("top_p", -0.5),
    ("top_p", 1.5),
    ("max_tokens", 0),
    ("max_tokens", -3),
    ("max_tokens", 2**53),
    ("max_completion_tokens", 0),
    ("stop", ["a", "b", "c", "d", "e"]),
    ("stop", [""]),
    ("stop", ""),
    ("seed", 1.5),
    ("seed", 3.0),
    ("presence_penalty", 2.5),
    ("presence_penalty", -2.01),
    ("frequency_penalty", -3),
    ("frequency_penalty", 1e400),
]


@pytest.mark.parametrize(
    ("name", "value"), OUT_OF_RANGE, ids=[f"{n}={str(v)[:12]}" for n, v in OUT_OF_RANGE]
)
async def test_out_of_range_sampling_field_is_400(
    start_gateway: StartGateway, state_dir: Path, name: str, value: Any
) -> None:
    gateway = await start_gateway(make_config(state_dir))
    reply = await post_chat(gateway, {**chat_body(), name: value})
    assert reply.status == 400, reply.body
    assert reply.error["type"] == "invalid_request_error"
    assert reply.error["param"] == name


async def test_sampling_fields_at_their_bounds_are_accepted(
    start_gateway: StartGateway, state_dir: Path
) -> None:
    gateway = await start_gateway(make_config(state_dir))
    bounds: list[dict[str, Any]] = [
        {"temperature": 0, "top_p": 0, "presence_penalty": -2, "frequency_penalty": -2},
        {"temperature": 2, "top_p": 1, "presence_penalty": 2, "frequency_penalty": 2.0},
        {"max_tokens": 1, "max_completion_tokens": 2**53 - 1, "seed": -5},
        {"stop": ["a", "b", "c", "d"]},
        {"stop": "a"},
        {field: None for field in ("temperature", "top_p", "max_tokens", "stop", "seed")},
    ]
    for fields in bounds:
        reply = await post_chat(gateway, {**chat_body(), **fields})
        assert reply.status == 200, (fields, reply.body)


# -- messages, sessions, agents -----------------------------------------------------------

NO_USER_MESSAGE = [
    [],
    [{"role": "system", "content": "You are terse."}],
    [{"role": "developer", "content": "x"}, {"role": "assistant", "content": "hello"}],
    [user("   ")],
    [user("hi"), {"role": "assistant", "content": "a trailing assistant turn"}],
]


@pytest.mark.parametrize("messages", NO_USER_MESSAGE, ids=range(len(NO_USER_MESSAGE)))
async def test_missing_user_message_is_400(
    start_gateway: StartGateway, state_dir: Path, messages: list[dict[str, Any]]
) -> None:
    gateway = await start_gateway(make_config(state_dir))
    reply = await post_chat(gateway, {"model": "moltbot", "messages": messages})
    assert reply.status == 400
    assert reply.error["type"] == "invalid_request_error"
    assert reply.error["param"] == "messages"


async def test_missing_messages_field_is_400(start_gateway: StartGateway, state_dir: Path) -> None:
    gateway = await start_gateway(make_config(state_dir))
    reply = await post_chat(gateway, {"model": "moltbot"})
    assert reply.status == 400
    assert reply.error["param"] == "messages"


@pytest.mark.parametrize(
    "key",
    ["cron:x", "subagent:x", "acp:x", "CRON:daily", "agent:main:cron:x", "agent:main:subagent:y"],
)
async def test_reserved_session_key_is_400(
    start_gateway: StartGateway, state_dir: Path, key: str
) -> None:
    gateway = await start_gateway(make_config(state_dir))
    reply = await post_chat(gateway, chat_body(), headers={"x-moltbot-session-key": key})
    assert reply.status == 400
    assert reply.error["type"] == "invalid_request_error"
    assert reply.error["param"] == "x-moltbot-session-key"
    assert await gateway.runtime.store.get(key) is None


@pytest.mark.parametrize(
    ("model", "headers"),
    [
        ("moltbot/nope", {}),
        ("moltbot:nope", {}),
        ("agent:nope", {}),
        ("gpt-4o", {}),
        ("moltbot/", {}),
        ("moltbot", {"x-moltbot-agent-id": "nope"}),
    ],
    ids=["slash", "colon", "agent", "foreign", "empty-id", "header"],
)
async def test_unknown_agent_or_model_is_404_model_not_found(
    start_gateway: StartGateway, state_dir: Path, model: str, headers: dict[str, str]
) -> None:
    gateway = await start_gateway(make_config(state_dir, agents=(AgentConfig(id="beta"),)))
    reply = await post_chat(gateway, chat_body(model=model), headers=headers)
    assert reply.status == 404
    assert reply.error["code"] == "model_not_found"
    assert reply.error["type"] == "invalid_request_error"
    assert (await gateway.runtime.store.list())[1] == 0  # no session was created


async def test_session_key_of_another_agent_than_the_model_is_400(
    start_gateway: StartGateway, state_dir: Path
) -> None:
    gateway = await start_gateway(make_config(state_dir, agents=(AgentConfig(id="beta"),)))
    headers = {"x-moltbot-session-key": "agent:main:mine"}
    reply = await post_chat(gateway, chat_body(model="moltbot/beta"), headers=headers)
    assert reply.status == 400
    assert reply.error["type"] == "invalid_request_error"
    assert reply.error["param"] == "x-moltbot-session-key"


async def test_session_key_of_an_unknown_agent_is_400_naming_the_header(
    start_gateway: StartGateway, state_dir: Path
) -> None:
    gateway = await start_gateway(make_config(state_dir))
    headers = {"x-moltbot-session-key": "agent:ghost:mine"}
    reply = await post_chat(gateway, chat_body(), headers=headers)
    assert reply.status == 400
    assert reply.error["param"] == "x-moltbot-session-key"
    assert "ghost" in reply.error["message"]


async def test_client_errors_do_not_disturb_the_next_request(
    start_gateway: StartGateway, state_dir: Path
) -> None:
    gateway = await start_gateway(make_config(state_dir))
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as http:  # one kept-alive connection
        url, headers = gateway.url + CHAT_PATH, gateway.headers()
        async with http.post(url, data="{oops", headers=headers) as resp:
            assert resp.status == 400
        async with http.post(url, json={**chat_body(), "top_p": 9}, headers=headers) as resp:
            assert resp.status == 400
        async with http.post(url, json=chat_body(user("still here")), headers=headers) as resp:
            assert resp.status == 200
            document = await resp.json()
    assert document["choices"][0]["message"]["content"] == "still here"


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        ('{"messages":[{"role":"user","content":"bad \\ud800 text"}]}', "messages[0].content"),
        ('{"user":"\\udc80","messages":[{"role":"user","content":"hi"}]}', "user"),
    ],
    ids=["content", "user"],
)
async def test_lone_surrogates_are_400_naming_the_field(
    start_gateway: StartGateway, state_dir: Path, raw: str, param: str
) -> None:
    gateway = await start_gateway(make_config(state_dir))
    reply = await post_chat(gateway, raw.encode())
    assert reply.status == 400
    assert reply.error["param"] == param
    pair = '{"messages":[{"role":"user","content":"fine \\ud83d\\ude00"}]}'
    follow_up = await post_chat(gateway, pair)
    assert follow_up.status == 200  # a valid surrogate *pair* is an ordinary emoji
    assert follow_up.json()["choices"][0]["message"]["content"] == "fine \U0001f600"


async def test_undecodable_bearer_bytes_are_a_plain_401(
    start_gateway: StartGateway, state_dir: Path
) -> None:
    gateway = await start_gateway(make_config(state_dir))
    host, port = gateway.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \xff\xfe\r\n"
        b"Connection: close\r\n\r\n"
    )
    status_line = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    assert status_line.split()[1] == b"401"
