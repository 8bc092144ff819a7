"""The Chat Completions API: OpenAI and the many servers that speak it (vLLM, Ollama, ...).

Wire format: POST `{baseUrl}/chat/completions` with `stream: true`; the answer is SSE frames of
`chat.completion.chunk` JSON, then `data: [DONE]`. With `stream_options.include_usage` the last
chunk before `[DONE]` has empty `choices` and the `usage` object.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from moltbot.config.model import ProviderConfig
from moltbot.content import ImagePart, Message, NamedTool, TextPart, ToolSet
from moltbot.providers.base import (
    Finish,
    FinishReason,
    ModelRequest,
    ProviderError,
    SamplingParams,
    StreamItem,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from moltbot.providers.errors import message_in
from moltbot.providers.jsonshape import first, integer, obj, text
from moltbot.providers.scrub import MAX_SCAN_CHARS
from moltbot.providers.sse import SSEFrame, StreamDecoder
from moltbot.providers.upstream import HttpProvider

# Sampling fields forwarded under the same name when set (`stop` needs a list, see below).
PLAIN_SAMPLING_FIELDS = (
    "temperature",
    "top_p",
    "max_tokens",
    "seed",
    "presence_penalty",
    "frequency_penalty",
)


class OpenAICompatProvider(HttpProvider):
    def __init__(
        self, config: ProviderConfig, *, connect_timeout: float = 10, read_timeout: float = 300
    ) -> None:
        super().__init__(
            config,
            "/chat/completions",
            request_headers(config),
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
        )

    def stream(self, request: ModelRequest) -> AsyncIterator[StreamItem]:
        decoder = ChatChunkDecoder(self.name)
        return self._client.stream(self._url, self._headers, request_body(request), decoder)


def request_headers(config: ProviderConfig) -> dict[str, str]:
    headers = {"Accept": "text/event-stream", "Content-Type": "application/json"}
    if config.api_key:
        headers["Authorization"] = f"Bearer {config.api_key}"
    headers.update(config.headers)  # configured headers win, e.g. a custom auth scheme
    return headers


def request_body(request: ModelRequest) -> dict[str, Any]:
    system = [{"role": "system", "content": request.system}] if request.system else []
    turns = [wire_message(m) for m in request.messages]
    return {
        "model": request.model,
        "messages": system + turns,
        "stream": True,
        "stream_options": {"include_usage": True},
        **sampling_fields(request.sampling),
        **tool_fields(request.tools),
    }


def wire_message(message: Message) -> dict[str, Any]:
    """A message in Chat Completions form: plain text stays a string (what every server
    takes); images make a parts array; tool calls and results carry their ids."""
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.text}
    wire: dict[str, Any] = {"role": message.role}
    if message.has_images:
        wire["content"] = [wire_part(p) for p in message.content]
    else:
        text = message.text
        wire["content"] = text if text or not message.tool_calls else None
    if message.tool_calls:
        wire["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls
        ]
    return wire


def wire_part(part: TextPart | ImagePart) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    if part.data is None:  # a stored image: its bytes were not kept
        return {"type": "text", "text": part.note()}
    url = f"data:{part.media_type};base64,{part.data}"
    return {"type": "image_url", "image_url": {"url": url}}


def tool_fields(tools: ToolSet) -> dict[str, Any]:
    if not tools.tools:
        # "none" with no tools is what no tools means; other choices need tools to name.
        return {}
    fields: dict[str, Any] = {
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    **({"description": t.description} if t.description else {}),
                    "parameters": t.parameters,
                },
            }
            for t in tools.tools
        ]
    }
    if isinstance(tools.choice, NamedTool):
        fields["tool_choice"] = {"type": "function", "function": {"name": tools.choice.name}}
    elif tools.choice is not None:
        fields["tool_choice"] = tools.choice
    if tools.parallel is not None:
        fields["parallel_tool_calls"] = tools.parallel
    return fields


def sampling_fields(sampling: SamplingParams) -> dict[str, Any]:
    fields = {name: getattr(sampling, name) for name in PLAIN_SAMPLING_FIELDS}
    if sampling.stop:  # an empty list is rejected by some servers; it means "unset" anyway
        fields["stop"] = list(sampling.stop)
    return {name: value for name, value in fields.items() if value is not None}


class ChatChunkDecoder(StreamDecoder):
    """Text as it comes; usage and the finish reason are held back for the end, where the
    provider contract wants them."""

    def __init__(self, provider: str) -> None:
        super().__init__(provider)
        self._usage: Usage | None = None
        self._finish: FinishReason | None = None
        # The wire's tool-call index -> (our index, the call's id). Servers that leave the
        # index out or repeat it (Gemini's OpenAI layer sends every call as index 0) mark a
        # new call with a new id; without this, parallel calls would merge into one.
        self._calls: dict[int, tuple[int, str | None]] = {}
        self._call_count = 0

    def on_frame(self, frame: SSEFrame) -> list[StreamItem]:
        if frame.data.strip() == "[DONE]":
            self.done = True
            return self._ending()
        chunk = self.parse_json(frame.data)
        self._raise_if_error(chunk)
        self._usage = usage_from(chunk.get("usage")) or self._usage
        choice = first(chunk.get("choices"))
        self._finish = finish_from(choice) or self._finish
        delta = obj(choice.get("delta"))
        content = text(delta.get("content"))
        items: list[StreamItem] = [TextDelta(content)] if content else []
        return items + [
            replace(call, index=self._call_index(call.index, call.id))
            for call in tool_call_deltas(delta.get("tool_calls"))
        ]

    def _call_index(self, wire_index: int, call_id: str | None) -> int:
        known = self._calls.get(wire_index)
        if known is not None and (call_id is None or known[1] in (None, call_id)):
            if call_id is not None:
                self._calls[wire_index] = (known[0], call_id)
            return known[0]
        self._calls[wire_index] = (self._call_count, call_id)
        self._call_count += 1
        return self._call_count - 1

    def on_eof(self) -> list[StreamItem]:
        # A finish_reason without [DONE] is a complete answer from a sloppy server; neither
        # means the connection died mid-answer.
        if self._finish is None:
            raise ProviderError("connection", f"{self.provider}: stream ended mid-answer")
        return self._ending()

    def whole_answer(self, document: dict[str, object]) -> list[StreamItem]:
        self._raise_if_error(document)
        choice = first(document.get("choices"))
        message = obj(choice.get("message"))
        reply = text(message.get("content"))
        self._usage = usage_from(document.get("usage"))
        self._finish = finish_from(choice)
        calls: list[StreamItem] = [*tool_call_deltas(message.get("tool_calls"))]
        return ([TextDelta(reply)] if reply else []) + calls + self._ending()

    def _ending(self) -> list[StreamItem]:
        usage: list[StreamItem] = [self._usage] if self._usage else []
        return [*usage, Finish(self._finish or "stop")]

    def _raise_if_error(self, document: dict[str, object]) -> None:
        if document.get("error") is None:
            return
        detail = (message_in(document) or json.dumps(document["error"]))[:MAX_SCAN_CHARS]
        raise ProviderError("upstream", f"{self.provider}: upstream error: {detail}")


def usage_from(value: object) -> Usage | None:
    """OpenAI counts cached prompt tokens inside `prompt_tokens`; we count them separately."""
    if not isinstance(value, dict):
        return None
    cached = integer(obj(value.get("prompt_tokens_details")).get("cached_tokens"))
    prompt = integer(value.get("prompt_tokens"))
    return Usage(
        input_tokens=max(0, prompt - cached),
        output_tokens=integer(value.get("completion_tokens")),
        cache_read_tokens=cached,
    )


def tool_call_deltas(value: object) -> list[ToolCallDelta]:
    """`tool_calls` of a streamed delta (fragments by index) or of a whole message (complete
    calls, their position as the index)."""
    if not isinstance(value, list):
        return []
    deltas: list[ToolCallDelta] = []
    for position, raw in enumerate(value):
        call = obj(raw)
        function = obj(call.get("function"))
        index = call.get("index")
        deltas.append(
            ToolCallDelta(
                index=index if isinstance(index, int) and not isinstance(index, bool) else position,
                id=text(call.get("id")) or None,
                name=text(function.get("name")) or None,
                arguments=text(function.get("arguments")),
            )
        )
    return deltas


def finish_from(choice: dict[str, object]) -> FinishReason | None:
    reason = choice.get("finish_reason")
    if not reason:
        return None
    if reason in ("tool_calls", "function_call"):
        return "tool_calls"
    return "length" if reason == "length" else "stop"
