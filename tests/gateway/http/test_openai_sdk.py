"""The official `openai` SDK, async and sync, streaming and not, against the real gateway."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.conftest import StartGateway, make_config
from tests.fake_upstreams import FakeAnthropic, FakeOpenAI, FakeUsage
from tests.gateway.http.helpers import upstream_config, user

# What the fake upstream reports for the scripted answers below: the gateway must pass it on
# as prompt = input + cached, completion = output.
REPORTED = FakeUsage(input_tokens=11, output_tokens=7, cache_read_tokens=5)


async def test_async_non_streaming_completion(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI
) -> None:
    gateway = await start_gateway(upstream_config(state_dir, up))
    up.stream(["Hello", " there"], usage=REPORTED)
    before = int(time.time())
    async with gateway.openai() as client:
        completion = await client.chat.completions.create(
            model="moltbot/default", messages=[user("Say hello")]
        )
    assert completion.id.startswith("chatcmpl-") and len(completion.id) > len("chatcmpl-")
    assert completion.object == "chat.completion"
    assert completion.model == "moltbot/default"
    assert before <= completion.created <= int(time.time())
    [choice] = completion.choices
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert choice.message.content == "Hello there"
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 16
    assert completion.usage.completion_tokens == 7
    assert completion.usage.total_tokens == 23
    assert up.requests[0].messages[-1] == {"role": "user", "content": "Say hello"}


async def test_async_streaming_with_usage_chunk(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI
) -> None:
    gateway = await start_gateway(upstream_config(state_dir, up))
    up.stream(["One", " two", " three"], usage=REPORTED)
    async with gateway.openai() as client:
        stream = await client.chat.completions.create(
            model="moltbot",
            messages=[user("count")],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    assert {c.id for c in chunks} == {chunks[0].id}
    assert chunks[0].id.startswith("chatcmpl-")
    assert {c.model for c in chunks} == {"moltbot"}
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "One two three"
    finish = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finish == [None, None, None, None, "stop"]
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None
    assert (usage_chunk.usage.prompt_tokens, usage_chunk.usage.completion_tokens) == (16, 7)
    assert usage_chunk.usage.total_tokens == 23
    assert all(c.usage is None for c in chunks[:-1])


async def test_async_streaming_without_usage_has_no_usage_chunk(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI
) -> None:
    gateway = await start_gateway(upstream_config(state_dir, up))
    async with gateway.openai() as client:
        stream = await client.chat.completions.create(
            model="moltbot", messages=[user("just this")], stream=True
        )
        chunks = [chunk async for chunk in stream]
    assert all(c.usage is None and len(c.choices) == 1 for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "just this"
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_sync_client_non_streaming_and_streaming(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI
) -> None:
    gateway = await start_gateway(upstream_config(state_dir, up))
    up.stream(["sync", " answer"], usage=REPORTED)

    def call() -> tuple[object, list[object]]:
        with gateway.openai_sync() as client:
            completion = client.chat.completions.create(
                model="moltbot:main", messages=[user("plain call")]
            )
            stream = client.chat.completions.create(
                model="moltbot:main",
                messages=[user("streamed call")],
                stream=True,
                stream_options={"include_usage": True},
            )
            return completion, list(stream)

    completion, chunks = await asyncio.to_thread(call)
    assert completion.id.startswith("chatcmpl-")  # type: ignore[attr-defined]
    assert completion.model == "moltbot:main"  # type: ignore[attr-defined]
    assert completion.choices[0].message.content == "sync answer"  # type: ignore[attr-defined]
    assert completion.usage.prompt_tokens == 16  # type: ignore[attr-defined]
    assert completion.usage.completion_tokens == 7  # type: ignore[attr-defined]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)  # type: ignore[attr-defined]
    assert text == "streamed call"
    assert chunks[-2].choices[0].finish_reason == "stop"  # type: ignore[attr-defined]
    usage = chunks[-1].usage  # type: ignore[attr-defined]
    # The fake's default usage: words of the whole upstream prompt in, words of the reply out.
    assert usage.completion_tokens == 2
    assert usage.prompt_tokens > 2
    assert usage.total_tokens == usage.prompt_tokens + 2


async def test_finish_reason_length_reported_by_the_upstream(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI
) -> None:
    gateway = await start_gateway(upstream_config(state_dir, up))
    up.stream(["cut", " short"], finish="length")
    up.stream(["cut", " again"], finish="length")
    async with gateway.openai() as client:
        completion = await client.chat.completions.create(
            model="moltbot", messages=[user("long story")], max_tokens=2
        )
        stream = await client.chat.completions.create(
            model="moltbot", messages=[user("long story")], max_tokens=2, stream=True
        )
        chunks = [chunk async for chunk in stream]
    assert completion.choices[0].finish_reason == "length"
    assert completion.choices[0].message.content == "cut short"
    assert chunks[-1].choices[0].finish_reason == "length"
    assert up.requests[0].json["max_tokens"] == 2


async def test_finish_reason_length_from_max_tokens_on_the_builtin_model(
    start_gateway: StartGateway, state_dir: Path
) -> None:
    gateway = await start_gateway(make_config(state_dir))  # no provider: builtin/echo
    async with gateway.openai() as client:
        cut = await client.chat.completions.create(
            model="moltbot", messages=[user("one two three four five")], max_tokens=3
        )
        whole = await client.chat.completions.create(
            model="moltbot", messages=[user("one two three four five")], max_tokens=5
        )
    assert (cut.choices[0].message.content, cut.choices[0].finish_reason) == (
        "one two three",
        "length",
    )
    assert cut.usage is not None and cut.usage.completion_tokens == 3
    assert (whole.choices[0].message.content, whole.choices[0].finish_reason) == (
        "one two three four five",
        "stop",
    )


async def test_usage_from_an_anthropic_upstream_counts_cache_reads_and_writes(
    start_gateway: StartGateway, state_dir: Path
) -> None:
    async with FakeAnthropic() as up:
        gateway = await start_gateway(upstream_config(state_dir, up))
        up.stream(["Hi"], usage=FakeUsage(20, 4, cache_read_tokens=100, cache_write_tokens=30))
        async with gateway.openai() as client:
            completion = await client.chat.completions.create(
                model="moltbot", messages=[user("hello")]
            )
    assert completion.choices[0].message.content == "Hi"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 150
    assert completion.usage.completion_tokens == 4
    assert completion.usage.total_tokens == 154


async def test_models_list_and_retrieve(start_gateway: StartGateway, state_dir: Path) -> None:
    gateway = await start_gateway(make_config(state_dir))
    async with gateway.openai() as client:
        listed = await client.models.list()
        model = await client.models.retrieve("moltbot/default")
    assert [m.id for m in listed.data] == ["moltbot", "moltbot/default", "moltbot/main"]
    assert {m.object for m in listed.data} == {"model"}
    assert {m.owned_by for m in listed.data} == {"moltbot"}
    assert model.id == "moltbot/default"
    assert model.object == "model"
    assert model.created == listed.data[1].created
