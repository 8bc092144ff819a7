"""The Anthropic Messages API.

Wire format: POST `{baseUrl}/v1/messages` with `stream: true`; the answer is named SSE events:
`message_start` (input usage), `content_block_start/delta/stop` (text, or a `tool_use` block
whose JSON input arrives as `input_json_delta` fragments), `message_delta` (stop_reason,
cumulative usage), `message_stop`, with `ping` and `error` possible anywhere.

Messages: roles must alternate, so consecutive messages of one side are merged; tool results
are `tool_result` blocks in a user message, right after the assistant's `tool_use` blocks.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any

from moltbot.config.model import ProviderConfig
from moltbot.content import ImagePart, Message, NamedTool, TextPart, ToolSet
from moltbot.providers.base import (
    ErrorKind,
    Finish,
    FinishReason,
    ModelRequest,
    ProviderError,
    StreamItem,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from moltbot.providers.jsonshape import integer, obj, text
from moltbot.providers.scrub import MAX_SCAN_CHARS
from moltbot.providers.sse import SSEFrame, StreamDecoder
from moltbot.providers.upstream import HttpProvider

ANTHROPIC_VERSION = "2023-06-01"
# The API requires max_tokens; used when neither the request nor the model config sets it.
DEFAULT_MAX_TOKENS = 4096

# `error.type` of an in-stream error event → our kind and the HTTP status it stands for
# (the status decides retryability: 5xx and unknown are worth another attempt).
STREAM_ERROR_KINDS: dict[str, tuple[ErrorKind, int | None]] = {
    "overloaded_error": ("upstream", 529),
    "api_error": ("upstream", 500),
    "rate_limit_error": ("rate_limit", 429),
    "authentication_error": ("auth", 401),
    "permission_error": ("auth", 403),
    "timeout_error": ("timeout", 504),
    "invalid_request_error": ("upstream", 400),
    "not_found_error": ("upstream", 404),
    "request_too_large": ("upstream", 413),
}

_TOOL_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_NOT_ID_CHARS = re.compile(r"[^A-Za-z0-9_-]")

STOP_REASONS: dict[str, FinishReason] = {"max_tokens": "length", "tool_use": "tool_calls"}

USAGE_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
)


class AnthropicProvider(HttpProvider):
    def __init__(
        self, config: ProviderConfig, *, connect_timeout: float = 10, read_timeout: float = 300
    ) -> None:
        super().__init__(
            config,
            "/v1/messages",
            request_headers(config),
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
        )
        self._model_max_tokens = {model.id: model.max_tokens for model in config.models}

    def stream(self, request: ModelRequest) -> AsyncIterator[StreamItem]:
        body = request_body(request, self._max_tokens(request))
        decoder = MessageEventDecoder(self.name)
        return self._client.stream(self._url, self._headers, body, decoder)

    def _max_tokens(self, request: ModelRequest) -> int:
        if request.sampling.max_tokens is not None:
            return request.sampling.max_tokens
        return self._model_max_tokens.get(request.model, DEFAULT_MAX_TOKENS)


def request_headers(config: ProviderConfig) -> dict[str, str]:
    headers = {
        "anthropic-version": ANTHROPIC_VERSION,
        "content-type": "application/json",
        "accept": "text/event-stream",
    }
    if config.api_key:
        headers["x-api-key"] = config.api_key
    headers.update(config.headers)
    return headers


def request_body(request: ModelRequest, max_tokens: int) -> dict[str, Any]:
    """Seed and the penalties have no Messages API equivalent and are dropped."""
    sampling = request.sampling
    optional = {
        "system": request.system or None,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "stop_sequences": list(sampling.stop) if sampling.stop else None,
    }
    return {
        "model": request.model,
        "messages": wire_messages(request.messages),
        "max_tokens": max_tokens,
        "stream": True,
        **{name: value for name, value in optional.items() if value is not None},
        **tool_fields(request.tools),
    }


def wire_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    wire: list[dict[str, Any]] = []
    for message in messages:
        role = "assistant" if message.role == "assistant" else "user"
        blocks = content_blocks(message)
        if not blocks:  # the API refuses empty content
            continue
        if wire and wire[-1]["role"] == role:
            wire[-1]["content"].extend(blocks)
        else:
            wire.append({"role": role, "content": blocks})
    for entry in wire:  # one text block is sent as a plain string, the simplest form
        blocks = entry["content"]
        if len(blocks) == 1 and blocks[0]["type"] == "text":
            entry["content"] = blocks[0]["text"]
    return wire


def content_blocks(message: Message) -> list[dict[str, Any]]:
    if message.role == "tool":
        result = message.text or "(no output)"
        call_id = tool_id(message.tool_call_id or "")
        block = {"type": "tool_result", "tool_use_id": call_id, "content": result}
        return [{**block, "is_error": True} if message.is_error else block]
    blocks = [block for part in message.content if (block := content_block(part))]
    blocks += [
        {"type": "tool_use", "id": tool_id(c.id), "name": c.name, "input": tool_input(c.arguments)}
        for c in message.tool_calls
    ]
    return blocks


def tool_id(call_id: str) -> str:
    """The API takes ids of letters, digits, _ and - only; ids from other servers or clients
    (`functions.get_weather:0`) are mapped, the same way in a call and its result, with a
    hash of the original so two ids never map to one."""
    if _TOOL_ID.match(call_id):
        return call_id
    digest = hashlib.sha256(call_id.encode()).hexdigest()[:12]
    return f"{_NOT_ID_CHARS.sub('_', call_id)[:40]}_{digest}"


def content_block(part: TextPart | ImagePart) -> dict[str, Any] | None:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text} if part.text else None
    if part.data is None:  # a stored image: its bytes were not kept
        return {"type": "text", "text": part.note()}
    source = {"type": "base64", "media_type": part.media_type, "data": part.data}
    return {"type": "image", "source": source}


def tool_input(arguments: str) -> dict[str, Any]:
    """`tool_use.input` must be an object; arguments that are not one are passed wrapped."""
    try:
        value = json.loads(arguments or "{}")
    except ValueError:
        return {"arguments": arguments}
    return value if isinstance(value, dict) else {"arguments": value}


def tool_fields(tools: ToolSet) -> dict[str, Any]:
    if not tools.tools:
        return {}
    choice: dict[str, Any] | None = None
    if isinstance(tools.choice, NamedTool):
        choice = {"type": "tool", "name": tools.choice.name}
    elif tools.choice is not None:
        choice = {"type": {"auto": "auto", "none": "none", "required": "any"}[tools.choice]}
    # "none" allows no call at all, and the API refuses the flag on it.
    if tools.parallel is False and tools.choice != "none":
        choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
    fields: dict[str, Any] = {
        "tools": [
            {
                "name": t.name,
                **({"description": t.description} if t.description else {}),
                # The API requires an object schema; OpenAI clients may leave the type out.
                "input_schema": {"type": "object", **t.parameters},
            }
            for t in tools.tools
        ]
    }
    if choice is not None:
        fields["tool_choice"] = choice
    return fields


class MessageEventDecoder(StreamDecoder):
    def __init__(self, provider: str) -> None:
        super().__init__(provider)
        self._usage = dict.fromkeys(USAGE_FIELDS, 0)
        self._stop_reason: str | None = None
        self._tool_blocks: dict[object, int] = {}  # content block index -> tool call index

    def on_frame(self, frame: SSEFrame) -> list[StreamItem]:
        event = self.parse_json(frame.data)
        kind = text(event.get("type")) or frame.event
        if kind == "content_block_delta":
            return self._delta(event.get("index"), obj(event.get("delta")))
        if kind == "content_block_start":
            return self._block_start(event.get("index"), obj(event.get("content_block")))
        if kind == "message_start":
            self._take_usage(obj(obj(event.get("message")).get("usage")))
        elif kind == "message_delta":
            self._stop_reason = text(obj(event.get("delta")).get("stop_reason")) or None
            self._take_usage(obj(event.get("usage")))
        elif kind == "message_stop":
            self.done = True
            return self._ending()
        elif kind == "error":
            raise stream_error(self.provider, event)
        return []  # ping, content_block_stop and future event types

    def _block_start(self, index: object, block: dict[str, object]) -> list[StreamItem]:
        if block.get("type") != "tool_use":
            return []
        call = self._tool_blocks.setdefault(index, len(self._tool_blocks))
        return [ToolCallDelta(call, text(block.get("id")) or None, text(block.get("name")))]

    def _delta(self, index: object, delta: dict[str, object]) -> list[StreamItem]:
        if delta.get("type") == "input_json_delta" and index in self._tool_blocks:
            fragment = text(delta.get("partial_json"))
            return [ToolCallDelta(self._tool_blocks[index], arguments=fragment)] if fragment else []
        return _text_delta(delta)

    def on_eof(self) -> list[StreamItem]:
        # A stop_reason without message_stop is a complete answer from a sloppy proxy.
        if self._stop_reason is None:
            raise ProviderError("connection", f"{self.provider}: stream ended mid-answer")
        return self._ending()

    def whole_answer(self, document: dict[str, object]) -> list[StreamItem]:
        if document.get("type") == "error":
            raise stream_error(self.provider, document)
        blocks = document.get("content")
        blocks = [obj(b) for b in blocks] if isinstance(blocks, list) else []
        reply = "".join(_block_text(b) for b in blocks)
        uses = [b for b in blocks if b.get("type") == "tool_use"]
        calls: list[StreamItem] = [
            ToolCallDelta(n, text(b.get("id")) or None, text(b.get("name")), json.dumps(b["input"]))
            if "input" in b
            else ToolCallDelta(n, text(b.get("id")) or None, text(b.get("name")))
            for n, b in enumerate(uses)
        ]
        self._stop_reason = text(document.get("stop_reason")) or None
        self._take_usage(obj(document.get("usage")))
        return ([TextDelta(reply)] if reply else []) + calls + self._ending()

    def _take_usage(self, usage: dict[str, object]) -> None:
        """Later events repeat the counts cumulatively, so the latest value wins."""
        for name in USAGE_FIELDS:
            if name in usage:
                self._usage[name] = integer(usage[name])

    def _ending(self) -> list[StreamItem]:
        usage = Usage(
            input_tokens=self._usage["input_tokens"],
            output_tokens=self._usage["output_tokens"],
            cache_read_tokens=self._usage["cache_read_input_tokens"],
            cache_write_tokens=self._usage["cache_creation_input_tokens"],
        )
        return [usage, Finish(STOP_REASONS.get(self._stop_reason or "", "stop"))]


def stream_error(provider: str, event: dict[str, object]) -> ProviderError:
    error = obj(event.get("error"))
    error_type = text(error.get("type")) or "error"
    kind, status = STREAM_ERROR_KINDS.get(error_type, ("upstream", None))
    detail = text(error.get("message"))[:MAX_SCAN_CHARS]
    return ProviderError(kind, f"{provider}: {error_type}: {detail}", status=status)


def _text_delta(delta: dict[str, object]) -> list[StreamItem]:
    # Other delta types (thinking, tool input JSON) carry no reply text.
    if delta.get("type") != "text_delta":
        return []
    chunk = text(delta.get("text"))
    return [TextDelta(chunk)] if chunk else []


def _block_text(block: object) -> str:
    block = obj(block)
    return text(block.get("text")) if block.get("type") == "text" else ""
