"""A fake OpenAI upstream that can also answer with tool calls, streamed the way the Chat
Completions API streams them: per call, a chunk with its index, id, type and name, then
fragments of its JSON arguments; then a chunk with `finish_reason: "tool_calls"`, the usage
chunk and `[DONE]`.

    async with FakeToolsOpenAI() as up:
        up.tool_calls(FakeCall("get_weather", '{"city": "Paris"}'), text="Let me look.")
        up.stream(["It is sunny."])  # the request after that: plain text, as FakeOpenAI does
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Self

from aiohttp import web

from tests.fake_upstreams import (
    FakeOpenAI,
    FakeUsage,
    RecordedRequest,
    prompt_words,
    sse_frame,
    word_chunks,
    word_count,
)


@dataclass(frozen=True)
class FakeCall:
    name: str
    arguments: str  # JSON text; streamed in up to three fragments
    id: str | None = None  # default: call_<n>, n counting every call the fake made


def fragments(text: str, count: int = 3) -> list[str]:
    """`text` cut into at most `count` non-empty pieces (joined, they are `text`)."""
    size = max(1, -(-len(text) // count))
    return [text[i : i + size] for i in range(0, len(text), size)]


class FakeToolsOpenAI(FakeOpenAI):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls_made = 0

    def tool_calls(self, *calls: FakeCall, text: str = "", usage: FakeUsage | None = None) -> Self:
        """Answer the next request with `text` (if any), then these calls, one after another."""
        return self._enqueue(partial(self._send_tool_calls, tuple(calls), text, usage))

    async def _send_tool_calls(
        self,
        calls: Sequence[FakeCall],
        text: str,
        usage: FakeUsage | None,
        request: web.Request,
        recorded: RecordedRequest,
    ) -> web.StreamResponse:
        arguments = "".join(c.arguments for c in calls)
        usage = usage or FakeUsage(prompt_words(recorded), word_count(text) + len(arguments))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        frames = [self._chunk(recorded, {"role": "assistant", "content": ""})]
        frames += [self._chunk(recorded, {"content": piece}) for piece in word_chunks(text)]
        for index, call in enumerate(calls):
            self.calls_made += 1
            opening = {
                "index": index,
                "id": call.id or f"call_{self.calls_made}",
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            frames.append(self._chunk(recorded, {"tool_calls": [opening]}))
            for piece in fragments(call.arguments):
                fragment = {"index": index, "function": {"arguments": piece}}
                frames.append(self._chunk(recorded, {"tool_calls": [fragment]}))
        frames.append(self._chunk(recorded, {}, finish="tool_calls"))
        frames.append(self._usage_chunk(recorded, usage))
        frames.append(sse_frame("[DONE]"))
        for frame in frames:  # one write each, as a real server flushes them
            await response.write(frame)
        return response

    @staticmethod
    def _chunk(
        recorded: RecordedRequest, delta: dict[str, Any], finish: str | None = None
    ) -> bytes:
        return sse_frame(
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": 1_700_000_000,
                "model": _model(recorded),
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
        )

    @staticmethod
    def _usage_chunk(recorded: RecordedRequest, usage: FakeUsage) -> bytes:
        prompt = usage.input_tokens + usage.cache_read_tokens
        body = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": _model(recorded),
            "choices": [],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": usage.output_tokens,
                "total_tokens": prompt + usage.output_tokens,
                "prompt_tokens_details": {"cached_tokens": usage.cache_read_tokens},
            },
        }
        return sse_frame(body)


def _model(recorded: RecordedRequest) -> str:
    model = recorded.json.get("model") if isinstance(recorded.json, dict) else None
    return model if isinstance(model, str) else "fake-model"


def tool_messages(recorded: RecordedRequest) -> list[dict[str, Any]]:
    """The assistant tool-call and tool-result messages a request sent upstream."""
    return [
        m for m in recorded.messages if m.get("role") == "tool" or m.get("tool_calls") is not None
    ]


def arguments_of(recorded: RecordedRequest) -> list[Any]:
    """The parsed arguments of every tool call in the request's messages, in order."""
    return [
        json.loads(call["function"]["arguments"])
        for message in recorded.messages
        for call in message.get("tool_calls") or ()
    ]
