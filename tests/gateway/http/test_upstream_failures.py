"""Upstream failures as the client sees them: retried, fallen back, or mapped to 502 / 504 before
the stream starts and to a final error frame after it started. The gateway keeps serving."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest

from tests.conftest import Gateway, StartGateway
from tests.fake_upstreams import FakeOpenAI
from tests.gateway.http.helpers import (
    DONE,
    chat_body,
    post_chat,
    sse_payloads,
    streamed_text,
    upstream_config,
    user,
)

# FAST_RETRIES in tests/conftest.py: two retries after the first attempt.
ATTEMPTS = 3


async def _still_serving(gateway: Gateway, up: FakeOpenAI) -> None:
    before = len(up.requests)
    reply = await post_chat(gateway, chat_body(user("and now?")))
    assert reply.status == 200, reply.body
    assert reply.json()["choices"][0]["message"]["content"] == "and now?"
    assert len(up.requests) == before + 1


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_upstream_500_after_retries_is_502(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI, stream: bool
) -> None:
    gateway = await start_gateway(upstream_config(state_dir, up))
    for _ in range(ATTEMPTS):
        up.status(500)
    reply = await post_chat(gateway, chat_body(stream=stream))
    assert reply.status == 502
    assert reply.headers["Content-Type"].startswith("application/json")
    assert reply.error["type"] == "upstream_error"
    assert reply.error["code"] == "upstream"
    assert "fake error 500" in reply.error["message"]
    assert len(up.requests) == ATTEMPTS and up.pending == 0
    await _still_serving(gateway, up)


async def test_upstream_429_then_success_is_retried(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI
) -> None:
    gateway = await start_gateway(upstream_config(state_dir, up))
    up.status(429, headers={"Retry-After": "0"})
    async with gateway.openai() as client:
        completion = await client.chat.completions.create(
            model="moltbot", messages=[user("patience")]
        )
    assert completion.choices[0].message.content == "patience"
    assert len(up.requests) == 2
    assert up.requests[0].json == up.requests[1].json  # the same request, sent again


async def test_hanging_upstream_is_504_non_streaming(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI
) -> None:
    gateway = await start_gateway(upstream_config(state_dir, up, timeout_seconds=1))
    up.hang()
    reply = await post_chat(gateway, chat_body())
    assert reply.status == 504
    assert reply.error["type"] == "timeout_error"
    assert reply.error["code"] == "timeout"
    await up.wait_disconnect(timeout=1.0)  # the timed-out request was closed
    await _still_serving(gateway, up)


async def test_hanging_upstream_is_504_before_the_stream_starts(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI
) -> None:
    gateway = await start_gateway(upstream_config(state_dir, up, timeout_seconds=1))
    up.hang()
    reply = await post_chat(gateway, chat_body(stream=True))
    assert reply.status == 504
    assert reply.headers["Content-Type"].startswith("application/json")
    assert reply.error["type"] == "timeout_error"
    await _still_serving(gateway, up)


async def test_sdk_sees_an_error_status_before_the_stream_starts(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI
) -> None:
    gateway = await start_gateway(upstream_config(state_dir, up))
    for _ in range(ATTEMPTS):
        up.status(503)
    async with gateway.openai() as client:
        with pytest.raises(openai.APIStatusError) as failed:
            await client.chat.completions.create(model="moltbot", messages=[user("x")], stream=True)
    assert failed.value.status_code == 502
    await _still_serving(gateway, up)


@pytest.mark.parametrize("failure", ["reset", "malformed", "error_frame"])
async def test_failure_mid_stream_ends_with_an_error_frame_and_done(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI, failure: str
) -> None:
    gateway = await start_gateway(upstream_config(state_dir, up))
    if failure == "reset":
        up.reset_after(2)
    elif failure == "malformed":
        up.malformed(after_chunks=2)
    else:
        up.error_frame("overloaded", after_chunks=2)
    reply = await post_chat(gateway, chat_body(user("alpha beta gamma"), stream=True))
    assert reply.status == 200
    payloads = sse_payloads(reply.body)
    assert payloads[-1] == DONE
    frames = [json.loads(p) for p in payloads[:-1]]
    error = frames[-1]
    assert set(error) == {"error"}
    assert set(error["error"]) == {"message", "type", "param", "code"}
    assert error["error"]["type"] == "upstream_error"
    assert error["error"]["message"]
    assert streamed_text(frames[:-1]) == "alpha beta"
    assert all(c["choices"][0]["finish_reason"] is None for c in frames[:-1])  # no "stop"
    assert len(up.requests) == 1  # text was already out: nothing is retried
    await _still_serving(gateway, up)


@pytest.mark.parametrize("failure", ["reset", "malformed"])
async def test_sdk_stream_raises_api_error_mid_stream(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI, failure: str
) -> None:
    gateway = await start_gateway(upstream_config(state_dir, up))
    if failure == "reset":
        up.reset_after(2)
    else:
        up.malformed(after_chunks=2)
    received = []
    async with gateway.openai() as client:
        stream = await client.chat.completions.create(
            model="moltbot", messages=[user("alpha beta gamma")], stream=True
        )
        with pytest.raises(openai.APIError) as failed:
            async for chunk in stream:
                received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) == "alpha beta"
    assert isinstance(failed.value.body, dict)
    assert failed.value.body["type"] == "upstream_error"
    await _still_serving(gateway, up)


async def test_falls_back_to_the_next_model_when_the_first_fails(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI, up2: FakeOpenAI
) -> None:
    config = upstream_config(state_dir, up, up2, fallbacks=("up2/m1",))
    gateway = await start_gateway(config)
    up.status(401)  # not retryable: straight to the fallback
    async with gateway.openai() as client:
        completion = await client.chat.completions.create(
            model="moltbot", messages=[user("anyone?")], user="fallback"
        )
    assert completion.choices[0].message.content == "second provider here"
    assert len(up.requests) == 1
    assert len(up2.requests) == 1
    assert up2.requests[0].messages[-1] == {"role": "user", "content": "anyone?"}
    session = await gateway.runtime.store.get("agent:main:openai-user:fallback")
    assert session is not None and session.model == "up2/m1"


async def test_every_model_failing_is_502_naming_them(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI, up2: FakeOpenAI
) -> None:
    gateway = await start_gateway(upstream_config(state_dir, up, up2, fallbacks=("up2/m1",)))
    up.status(401)
    up2.status(403)
    reply = await post_chat(gateway, chat_body(stream=True))
    assert reply.status == 502
    assert reply.error["code"] == "auth"
    assert "up/m1" in reply.error["message"] and "up2/m1" in reply.error["message"]
    await _still_serving(gateway, up)
