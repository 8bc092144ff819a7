"""Wire-level checks with raw aiohttp: exact SSE frames, headers, flushing and keep-alives."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest

from moltbot.config.model import Config
from moltbot.gateway.http.openai import KEEPALIVE_KEY
from moltbot.gateway.server import build_app
from tests.conftest import Gateway, ServeApp, StartGateway
from tests.fake_upstreams import FakeOpenAI, FakeUsage
from tests.gateway.http.helpers import (
    CHAT_PATH,
    DONE,
    chat_body,
    data_of,
    next_event,
    post_chat,
    sse_chunks,
    sse_payloads,
    upstream_config,
    user,
)

DELTAS = ["Hel", "lo", ", wor", "ld!"]


def _check_sse_headers(headers: object) -> None:
    assert headers["Content-Type"].split(";")[0] == "text/event-stream"  # type: ignore[index]
    assert headers["Cache-Control"] == "no-cache"  # type: ignore[index]


async def test_stream_frames_exactly(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI
) -> None:
    gateway = await start_gateway(upstream_config(state_dir, up))
    up.stream(DELTAS, usage=FakeUsage(9, 4, cache_read_tokens=1))
    body = chat_body(user("hi"), model="moltbot/main", stream=True)
    body["stream_options"] = {"include_usage": True}
    reply = await post_chat(gateway, body)
    assert reply.status == 200
    _check_sse_headers(reply.headers)
    chunks = sse_chunks(reply.body)
    completion_id = chunks[0]["id"]
    assert completion_id.startswith("chatcmpl-")
    for chunk in chunks:
        assert chunk["id"] == completion_id
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["model"] == "moltbot/main"
        assert isinstance(chunk["created"], int)
    choices = [chunk["choices"] for chunk in chunks]
    assert choices == [
        [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}],
        *[[{"index": 0, "delta": {"content": d}, "finish_reason": None}] for d in DELTAS],
        [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        [],
    ]
    assert chunks[-1]["usage"] == {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14}
    assert all("usage" not in chunk for chunk in chunks[:-1])


async def test_stream_without_include_usage_ends_with_finish_then_done(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI
) -> None:
    gateway = await start_gateway(upstream_config(state_dir, up))
    up.stream(DELTAS)
    options = {"stream_options": {"include_usage": False}}
    reply = await post_chat(gateway, chat_body(user("hi"), stream=True, **options))
    payloads = sse_payloads(reply.body)
    assert payloads[-1] == DONE
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert len(chunks) == 1 + len(DELTAS) + 1
    assert chunks[-1]["choices"] == [{"index": 0, "delta": {}, "finish_reason": "stop"}]
    assert all("usage" not in chunk for chunk in chunks)


@pytest.mark.parametrize(
    "deltas", [["hi", "hi"], [" ", "x", " "], []], ids=["repeat", "ws", "none"]
)
async def test_every_delta_is_one_chunk_as_sent(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI, deltas: list[str]
) -> None:
    gateway = await start_gateway(upstream_config(state_dir, up))
    up.stream(deltas)
    chunks = sse_chunks((await post_chat(gateway, chat_body(stream=True))).body)
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant"},
        *({"content": d} for d in deltas),
        {},
    ]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_non_streaming_answer_is_plain_json(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI
) -> None:
    gateway = await start_gateway(upstream_config(state_dir, up))
    up.stream(DELTAS)
    reply = await post_chat(gateway, chat_body(user("hi"), stream=False))
    assert reply.status == 200
    assert reply.headers["Content-Type"].split(";")[0] == "application/json"
    document = reply.json()
    assert set(document) == {"id", "object", "created", "model", "choices", "usage"}
    assert document["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello, world!"},
            "finish_reason": "stop",
        }
    ]


async def test_deltas_are_flushed_as_they_arrive(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI
) -> None:
    """The upstream sends two deltas and then stalls without finishing: a gateway that buffered
    anything until the end would never deliver them."""
    gateway = await start_gateway(upstream_config(state_dir, up))
    up.hang(after_chunks=2)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        body = chat_body(user("first second third"), stream=True)
        async with http.post(gateway.url + CHAT_PATH, json=body, headers=gateway.headers()) as r:
            assert r.status == 200
            _check_sse_headers(r.headers)
            role = data_of(await next_event(r))
            assert role["choices"][0]["delta"] == {"role": "assistant"}
            first = data_of(await next_event(r))
            second = data_of(await next_event(r))
            assert first["choices"][0]["delta"] == {"content": "first"}
            assert second["choices"][0]["delta"] == {"content": " second"}
            # Both arrived while the upstream answer is still open and unfinished.
            assert up.active_streams == 1
            assert len(up.requests) == 1
    await up.wait_disconnect(timeout=1.0)


async def test_delayed_deltas_reach_the_client_before_the_upstream_finishes(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI
) -> None:
    gateway = await start_gateway(upstream_config(state_dir, up))
    up.stream(["a", "b", "c"], delay=0.2)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        body = chat_body(user("x"), stream=True)
        async with http.post(gateway.url + CHAT_PATH, json=body, headers=gateway.headers()) as r:
            await next_event(r)  # role
            first = data_of(await next_event(r))
            assert first["choices"][0]["delta"] == {"content": "a"}
            upstream_busy = up.active_streams
            rest = [data_of(await next_event(r)) for _ in range(4)]
    # Seen while the upstream was still sending "b" and "c" (0.2 s apart).
    assert upstream_busy == 1
    assert [c["choices"][0]["delta"].get("content") for c in rest[:2]] == ["b", "c"]
    assert rest[2]["choices"][0]["finish_reason"] == "stop"
    assert rest[3] == DONE


async def _quick_keepalive_gateway(serve_app: ServeApp, config: Config) -> Gateway:
    """A gateway whose streams send `: keep-alive` after 50 ms of silence instead of 15 s."""
    app = build_app(config)
    app[KEEPALIVE_KEY] = 0.05
    return await serve_app(app, config)


async def test_keepalive_comment_while_waiting_for_the_first_token(
    serve_app: ServeApp, state_dir: Path, up: FakeOpenAI
) -> None:
    gateway = await _quick_keepalive_gateway(serve_app, upstream_config(state_dir, up))
    up.hang()  # the upstream never answers
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        body = chat_body(user("x"), stream=True)
        async with http.post(gateway.url + CHAT_PATH, json=body, headers=gateway.headers()) as r:
            assert r.status == 200
            _check_sse_headers(r.headers)
            assert await next_event(r) == ": keep-alive"
            assert await next_event(r) == ": keep-alive"
    await up.wait_disconnect(timeout=1.0)


async def test_keepalive_comment_between_deltas(
    serve_app: ServeApp, state_dir: Path, up: FakeOpenAI
) -> None:
    gateway = await _quick_keepalive_gateway(serve_app, upstream_config(state_dir, up))
    up.hang(after_chunks=1)  # one delta, then silence
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        body = chat_body(user("word"), stream=True)
        async with http.post(gateway.url + CHAT_PATH, json=body, headers=gateway.headers()) as r:
            assert data_of(await next_event(r))["choices"][0]["delta"] == {"role": "assistant"}
            assert data_of(await next_event(r))["choices"][0]["delta"] == {"content": "word"}
            assert await next_event(r) == ": keep-alive"
    await up.wait_disconnect(timeout=1.0)
