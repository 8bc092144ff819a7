"""OpenAI chat-completions wire shapes: request parsing and validation, response bodies.

Nothing here knows about aiohttp or the runtime; invalid input raises `InvalidRequest` naming the
field (`param`), which the error middleware renders as OpenAI's error envelope.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import orjson

from moltbot.agents.prompt import history_context
from moltbot.gateway.errors import InvalidRequest
from moltbot.providers.base import SamplingParams, Usage

MAX_STOP_SEQUENCES = 4
MAX_SAFE_INTEGER = 2**53 - 1


@dataclass(frozen=True, slots=True)
class ChatCompletionRequest:
    model: str
    prompt: str  # the turn's user message (history-context block when several messages came)
    extra_system_prompt: str | None
    stream: bool
    include_usage: bool
    user: str | None
    sampling: SamplingParams


def parse_chat_request(body: Any) -> ChatCompletionRequest:
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    model = _optional(body, "model", str) or "moltbot"
    stream = bool(_optional(body, "stream", bool))
    options = _optional(body, "stream_options", dict) or {}
    include_usage = bool(options.get("include_usage", False))
    if not isinstance(options.get("include_usage", False), bool):
        raise InvalidRequest(
            "stream_options.include_usage must be a boolean", param="stream_options.include_usage"
        )
    n = _optional(body, "n", int)
    if n is not None and n != 1:
        raise InvalidRequest("only n=1 is supported", param="n")
    prompt, extra = build_prompt(_messages(body))
    user = _optional(body, "user", str)
    return ChatCompletionRequest(
        model, prompt, extra, stream, include_usage, user or None, parse_sampling(body)
    )


def _optional(body: dict[str, Any], name: str, kind: type) -> Any:
    value = body.get(name)
    if value is None:
        return None
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise InvalidRequest(f"{name} must be an integer", param=name)
    if kind is float and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise InvalidRequest(f"{name} must be a number", param=name)
    if kind not in (int, float) and not isinstance(value, kind):
        raise InvalidRequest(f"{name} must be {_KIND_NAMES[kind]}", param=name)
    return value


_KIND_NAMES = {str: "a string", bool: "a boolean", dict: "an object", list: "an array"}


# -- messages -> prompt ---------------------------------------------------------------------------

_SENDERS = {"user": "User", "assistant": "Assistant", "tool": "Tool", "function": "Tool"}


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise InvalidRequest("messages must be an array of message objects", param="messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidRequest(
                "each message must be an object with a string role", param=f"messages[{index}]"
            )
    return messages


def message_text(message: dict[str, Any], index: int) -> str:
    """String content, or the text parts of array content joined by newlines."""
    content = message.get("content")
    if content is None or isinstance(content, str):
        return (content or "").strip()
    if not isinstance(content, list):
        raise InvalidRequest(
            "content must be a string or an array of parts", param=f"messages[{index}].content"
        )
    texts = [text for part in content if (text := _part_text(part, index)) is not None]
    return "\n".join(texts).strip()


def _part_text(part: object, index: int) -> str | None:
    """A `text` / `input_text` part's `text`, or any part's string `input_text` (the reference
    reads both); other parts (images, audio) carry no text."""
    if not isinstance(part, dict):
        return None
    text_part = part.get("type") in ("text", "input_text")
    if text_part and isinstance(part.get("text"), str):
        return part["text"]
    if isinstance(part.get("input_text"), str):
        return part["input_text"]
    if text_part:
        raise InvalidRequest("text parts need a string text", param=f"messages[{index}].content")
    return None


def build_prompt(messages: list[dict[str, Any]]) -> tuple[str, str | None]:
    """(prompt, extra system prompt): system/developer text goes to the system prompt, the rest
    becomes the reference's history-context block ending with the last user or tool message."""
    system: list[str] = []
    entries: list[tuple[str, str, str]] = []  # (role, sender, body)
    for index, message in enumerate(messages):
        role, text = message["role"], message_text(message, index)
        if role in ("system", "developer"):
            if text:
                system.append(text)
        elif role in _SENDERS and text:
            entries.append((role, _sender(role, message), text))
    current = max(
        (i for i, e in enumerate(entries) if e[0] in ("user", "tool", "function")), default=None
    )
    if current is None:
        raise InvalidRequest("Missing user message in `messages`.", param="messages")
    history = [(sender, body) for _, sender, body in entries[:current]]
    prompt = history_context(history, (entries[current][1], entries[current][2]))
    return prompt, "\n\n".join(system) or None


def _sender(role: str, message: dict[str, Any]) -> str:
    name = message.get("name")
    if role in ("tool", "function") and isinstance(name, str) and name:
        return f"Tool:{name}"
    return _SENDERS[role]


# -- sampling ------------------------------------------------------------


def parse_sampling(body: dict[str, Any]) -> SamplingParams:
    max_tokens = _positive_int(body, "max_tokens")
    max_completion = _positive_int(body, "max_completion_tokens")
    return SamplingParams(
        temperature=_ranged(body, "temperature", 0, 2),
        top_p=_ranged(body, "top_p", 0, 1),
        max_tokens=max_completion if max_completion is not None else max_tokens,
        stop=_stop(body),
        seed=_optional(body, "seed", int),
        presence_penalty=_ranged(body, "presence_penalty", -2, 2),
        frequency_penalty=_ranged(body, "frequency_penalty", -2, 2),
    )


def _ranged(body: dict[str, Any], name: str, low: float, high: float) -> float | None:
    value = _optional(body, name, float)
    # Plain comparisons: NaN fails them, and a huge JSON integer compares exactly (converting
    # it to float for math.isfinite would raise OverflowError).
    if value is not None and not low <= value <= high:
        raise InvalidRequest(f"{name} must be between {low} and {high}", param=name)
    return value


def _positive_int(body: dict[str, Any], name: str) -> int | None:
    value = _optional(body, name, int)
    if value is not None and not 0 < value <= MAX_SAFE_INTEGER:
        raise InvalidRequest(f"{name} must be a positive integer", param=name)
    return value


def _stop(body: dict[str, Any]) -> tuple[str, ...] | None:
    stop = body.get("stop")
    if stop is None:
        return None
    if isinstance(stop, str):
        stop = [stop]
    if (
        not isinstance(stop, list)
        or not 0 < len(stop) <= MAX_STOP_SEQUENCES
        or not all(isinstance(s, str) and s for s in stop)
    ):
        raise InvalidRequest(
            "stop must be a string or an array of up to 4 non-empty strings", param="stop"
        )
    return tuple(stop)


# -- responses ------------------------------------------------------------


def usage_body(usage: Usage | None) -> dict[str, int]:
    prompt = usage.prompt_tokens if usage else 0
    completion = usage.output_tokens if usage else 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def completion_body(
    completion_id: str, model: str, content: str, finish_reason: str, usage: Usage | None
) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish_reason,
            }
        ],
        "usage": usage_body(usage),
    }


class ChunkEncoder:
    """The `chat.completion.chunk` JSON of one streamed completion.

    Everything but the delta is the same in every chunk (one `created` per completion, as
    OpenAI does), so that part is encoded once and each chunk costs one small `json.dumps`."""

    def __init__(self, completion_id: str, model: str) -> None:
        head = json.dumps(
            {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
            },
            separators=(",", ":"),
        )
        self._head = head[:-1].encode()  # without the closing brace
        self._choice = self._head + b',"choices":[{"index":0,"delta":'

    def role(self) -> bytes:
        return self._choice + b'{"role":"assistant"},"finish_reason":null}]}'

    def content(self, text: str) -> bytes:
        return self._choice + b'{"content":' + _json(text) + b'},"finish_reason":null}]}'

    def finish(self, reason: str) -> bytes:
        return self._choice + b'{},"finish_reason":' + _json(reason) + b"}]}"

    def usage(self, usage: Usage | None) -> bytes:
        return self._head + b',"choices":[],"usage":' + _json(usage_body(usage)) + b"}"


def _json(value: Any) -> bytes:
    return orjson.dumps(value)


def reject_lone_surrogates(value: Any, param: str = "body") -> None:
    """JSON escapes can smuggle in lone surrogates (`"\\ud800"`): text that cannot be stored,
    logged or sent on as UTF-8. Refuse it up front, naming where it was found."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidRequest(
                f"{param} contains invalid Unicode (a lone surrogate)", param=param
            ) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            reject_lone_surrogates(key, param)
            reject_lone_surrogates(item, key if param == "body" else f"{param}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            reject_lone_surrogates(item, f"{param}[{index}]")
