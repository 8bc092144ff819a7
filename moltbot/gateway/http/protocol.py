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

from moltbot.content import ToolCall, ToolSet
from moltbot.gateway.errors import InvalidRequest
from moltbot.gateway.http.messages import ChatTurn, parse_messages, parse_tools
from moltbot.providers.base import SamplingParams, Usage

MAX_STOP_SEQUENCES = 4
MAX_SAFE_INTEGER = 2**53 - 1


@dataclass(frozen=True, slots=True)
class ChatCompletionRequest:
    model: str
    turn: ChatTurn  # the messages: system text, context, the turn's input
    tools: ToolSet
    stream: bool
    include_usage: bool
    user: str | None
    sampling: SamplingParams


def parse_chat_request(body: Any, *, fetch_image_urls: bool = False) -> ChatCompletionRequest:
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
    turn = parse_messages(body.get("messages"), fetch_image_urls=fetch_image_urls)
    tools = parse_tools(body)
    user = _optional(body, "user", str)
    return ChatCompletionRequest(
        model, turn, tools, stream, include_usage, user or None, parse_sampling(body)
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
    completion_id: str,
    model: str,
    content: str,
    finish_reason: str,
    usage: Usage | None,
    tool_calls: tuple[ToolCall, ...] = (),
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["content"] = content or None  # what OpenAI sends with tool calls
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in tool_calls
        ]
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
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

    def tool_call(self, index: int, call_id: str | None, name: str | None, args: str) -> bytes:
        """A `delta.tool_calls` chunk: id, type and name open a call, then arguments follow."""
        call: dict[str, Any] = {"index": index}
        if call_id is not None:
            call.update(
                id=call_id, type="function", function={"name": name or "", "arguments": args}
            )
        else:
            call["function"] = {"arguments": args}
        delta = _json({"tool_calls": [call]})
        return self._choice + delta + b',"finish_reason":null}]}'

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
