"""One chat completion through the official `openai` SDK in any of its four ways (async or sync
client, streamed or not), read back into one shape, so a test can run the same turn each way.

Streamed tool calls are put back together by index the way SDK users do, checking OpenAI's
rules on the way: a call's first fragment carries its id, type "function" and name; the later
ones carry argument text only.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Literal

from tests.conftest import Gateway

Mode = Literal["async", "async-stream", "sync", "sync-stream"]
MODES: tuple[Mode, ...] = ("async", "async-stream", "sync", "sync-stream")


@dataclass
class Call:
    id: str
    name: str
    arguments: str


@dataclass
class Answer:
    content: str | None
    tool_calls: list[Call]
    finish_reason: str | None
    chunks: list[Any] = field(default_factory=list)  # streamed: every chunk, in order


async def ask(gateway: Gateway, mode: Mode, **create: Any) -> Answer:
    """`client.chat.completions.create(**create)` the `mode` way; `model` defaults to moltbot."""
    create.setdefault("model", "moltbot")
    stream = mode.endswith("-stream")
    if stream:
        create.setdefault("stream_options", {"include_usage": True})
    if mode.startswith("sync"):
        return await asyncio.to_thread(_ask_sync, gateway, stream, create)
    async with gateway.openai() as client:
        if not stream:
            return from_completion(await client.chat.completions.create(**create))
        chunks = [c async for c in await client.chat.completions.create(stream=True, **create)]
    return from_chunks(chunks)


def _ask_sync(gateway: Gateway, stream: bool, create: dict[str, Any]) -> Answer:
    with gateway.openai_sync() as client:
        if not stream:
            return from_completion(client.chat.completions.create(**create))
        return from_chunks(list(client.chat.completions.create(stream=True, **create)))


def from_completion(completion: Any) -> Answer:
    [choice] = completion.choices
    calls = [
        Call(c.id, c.function.name, c.function.arguments) for c in choice.message.tool_calls or ()
    ]
    return Answer(choice.message.content, calls, choice.finish_reason)


def from_chunks(chunks: list[Any]) -> Answer:
    text: list[str] = []
    calls: dict[int, Call] = {}
    finish = None
    for chunk in chunks:
        if not chunk.choices:
            continue
        [choice] = chunk.choices
        finish = choice.finish_reason or finish
        text.append(choice.delta.content or "")
        for delta in choice.delta.tool_calls or ():
            reassemble(calls, delta)
    ordered = [calls[i] for i in sorted(calls)]
    assert sorted(calls) == list(range(len(calls))), sorted(calls)  # indexes 0, 1, 2, ...
    return Answer("".join(text) or None, ordered, finish, chunks)


def reassemble(calls: dict[int, Call], delta: Any) -> None:
    """Add one `delta.tool_calls[]` entry (an SDK object) to the calls so far."""
    if delta.index not in calls:
        assert delta.id, f"the first fragment of call {delta.index} has no id: {delta}"
        assert delta.type == "function", delta
        assert delta.function is not None and delta.function.name, delta
        calls[delta.index] = Call(delta.id, delta.function.name, delta.function.arguments or "")
        return
    assert delta.id is None and delta.type is None, f"a later fragment reopens a call: {delta}"
    assert delta.function is not None and not delta.function.name, delta
    calls[delta.index].arguments += delta.function.arguments or ""
