"""The request rules real providers enforce on tool rounds and images, for the fake upstreams.

OpenAI and Anthropic refuse a conversation whose tool calls and results do not pair up (an
orphan result, a call left unanswered, a result that is not right after its call) and tool
fields in shapes they do not know. A gateway that sends such a request works against no real
provider, so the fakes refuse it too, with a 400 naming the rule, as the APIs do.

Each function returns what is wrong with a request body, or None.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
_TOOL_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
_DATA_URL = re.compile(r"^data:(image/[a-z]+);base64,(.+)$", re.DOTALL)


def openai_problem(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages must be a non-empty array"
    if (problem := _openai_tool_fields(body)) is not None:
        return problem
    open_calls: list[str] = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        role = message.get("role") if isinstance(message, dict) else None
        if role == "tool":
            call_id = message.get("tool_call_id")
            if call_id not in open_calls:
                return (
                    f"{where}: messages with role 'tool' must be a response to a preceding "
                    f"message with 'tool_calls' (no open call {call_id!r})"
                )
            open_calls.remove(call_id)
            if not isinstance(message.get("content"), str | list):
                return f"{where}.content: a tool message needs content"
            continue
        if open_calls:
            return (
                "An assistant message with 'tool_calls' must be followed by tool messages "
                f"responding to each 'tool_call_id'; missing: {open_calls} before {where}"
            )
        if role not in ("system", "developer", "user", "assistant"):
            return f"{where}.role: unknown role {role!r}"
        if role == "assistant" and message.get("tool_calls") is not None:
            calls = message["tool_calls"]
            if not isinstance(calls, list) or not calls:
                return f"{where}.tool_calls: must be a non-empty array"
            for number, call in enumerate(calls):
                function = call.get("function") if isinstance(call, dict) else None
                if (
                    not isinstance(call.get("id"), str)
                    or call.get("type") != "function"
                    or not isinstance(function, dict)
                    or not isinstance(function.get("name"), str)
                    or not isinstance(function.get("arguments"), str)
                ):
                    return f"{where}.tool_calls[{number}]: malformed tool call {call!r}"
            open_calls = [call["id"] for call in calls]
        elif message.get("content") is None:
            return f"{where}.content: content is required"
        if (problem := _openai_content(message.get("content"), f"{where}.content")) is not None:
            return problem
    if open_calls:
        return f"tool calls {open_calls} have no tool messages answering them"
    return None


def _openai_tool_fields(body: dict[str, Any]) -> str | None:
    tools = body.get("tools")
    if tools is None:
        for name in ("tool_choice", "parallel_tool_calls"):
            if name in body:
                return f"'{name}' is only allowed when 'tools' are specified"
        return None
    if not isinstance(tools, list) or not tools:
        return "tools: must be a non-empty array"
    names = set()
    for index, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if tool.get("type") != "function" or not isinstance(function, dict):
            return f"tools[{index}]: must be a function tool"
        if not isinstance(function.get("name"), str) or not isinstance(
            function.get("parameters", {}), dict
        ):
            return f"tools[{index}].function: needs a name and object parameters"
        names.add(function["name"])
    choice = body.get("tool_choice")
    if choice is not None and choice not in ("auto", "none", "required"):
        function = choice.get("function") if isinstance(choice, dict) else None
        if (
            not isinstance(function, dict)
            or choice.get("type") != "function"
            or function.get("name") not in names
        ):
            return f"tool_choice: invalid value {choice!r}"
    if not isinstance(body.get("parallel_tool_calls", True), bool):
        return "parallel_tool_calls: must be a boolean"
    return None


def _openai_content(content: Any, where: str) -> str | None:
    if content is None or isinstance(content, str):
        return None
    if not isinstance(content, list):
        return f"{where}: must be a string or an array of parts"
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            continue
        if kind == "image_url":
            url = part.get("image_url", {}).get("url") if isinstance(part, dict) else None
            if not isinstance(url, str) or _data_url_problem(url) is not None:
                return f"{where}[{index}].image_url.url: {_data_url_problem(str(url))}"
            continue
        return f"{where}[{index}]: unsupported part {part!r}"
    return None


def _data_url_problem(url: str) -> str | None:
    match = _DATA_URL.match(url)
    if match is None:
        return "not a base64 image data URL"
    if match[1] not in IMAGE_TYPES:
        return f"unsupported image type {match[1]}"
    return _base64_problem(match[2])


def _base64_problem(data: str) -> str | None:
    try:
        if not base64.b64decode(data, validate=True):
            return "empty image"
    except (binascii.Error, ValueError):
        return "invalid base64 image data"
    return None


# -- Anthropic ----------------------------------------------------------------------------


def anthropic_problem(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    if not isinstance(body.get("max_tokens"), int):
        return "max_tokens: Field required"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: must be a non-empty array"
    if (problem := _anthropic_tool_fields(body)) is not None:
        return problem
    previous_uses: list[str] = []  # tool_use ids of the message before
    all_uses: set[str] = set()
    for index, message in enumerate(messages):
        where = f"messages.{index}"
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            return f"{where}.role: must be user or assistant"
        blocks = _blocks(message.get("content"))
        if blocks is None or not blocks:
            return f"{where}: all messages must have non-empty content"
        results = [b.get("tool_use_id") for b in blocks if b.get("type") == "tool_result"]
        if previous_uses and sorted(results) != sorted(previous_uses):
            return (
                f"{where}: `tool_use` ids were found without `tool_result` blocks immediately "
                f"after: {sorted(set(previous_uses) - set(results))}"
            )
        if any(r not in previous_uses for r in results):
            return (
                f"{where}: unexpected `tool_use_id` found in `tool_result` blocks: each "
                "`tool_result` block must have a corresponding `tool_use` block in the "
                "previous message"
            )
        if results and any(b.get("type") != "tool_result" for b in blocks[: len(results)]):
            return f"{where}: tool_result blocks must come first in the user message"
        for number, block in enumerate(blocks):
            if (problem := _anthropic_block(block, role, f"{where}.content.{number}")) is not None:
                return problem
        previous_uses = [b["id"] for b in blocks if b.get("type") == "tool_use"]
        for number, use in enumerate(previous_uses):
            if use in all_uses:
                return f"{where}.content.{number}: `tool_use` ids must be unique"
            if not _TOOL_ID.match(use):
                return (
                    f"{where}.content.{number}.id: String should match pattern '^[a-zA-Z0-9_-]+$'"
                )
            all_uses.add(use)
    if previous_uses:
        return f"tool_use ids {previous_uses} have no tool_result after them"
    return None


def _blocks(content: Any) -> list[dict[str, Any]] | None:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if isinstance(content, list) and all(isinstance(b, dict) for b in content):
        return content
    return None


def _anthropic_block(block: dict[str, Any], role: str, where: str) -> str | None:
    kind = block.get("type")
    if kind == "text":
        text = block.get("text")
        return None if isinstance(text, str) and text else f"{where}: text blocks must be non-empty"
    if kind == "tool_use" and role == "assistant":
        if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
            return f"{where}: tool_use needs an id and a name"
        return None if isinstance(block.get("input"), dict) else f"{where}.input: not an object"
    if kind == "tool_result" and role == "user":
        content = block.get("content")
        return None if isinstance(content, str | list) else f"{where}.content: invalid"
    if kind == "image" and role == "user":
        source = block.get("source")
        if not isinstance(source, dict) or source.get("type") != "base64":
            return f"{where}.source: must be a base64 source"
        if source.get("media_type") not in IMAGE_TYPES:
            return f"{where}.source.media_type: unsupported {source.get('media_type')!r}"
        problem = _base64_problem(str(source.get("data")))
        return None if problem is None else f"{where}.source.data: {problem}"
    return f"{where}: block type {kind!r} is not allowed in a {role} message"


_CHOICE_FIELDS = {
    "auto": {"type", "disable_parallel_tool_use"},
    "any": {"type", "disable_parallel_tool_use"},
    "tool": {"type", "name", "disable_parallel_tool_use"},
    "none": {"type"},
}


def _anthropic_tool_fields(body: dict[str, Any]) -> str | None:
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if tools is None:
        return None if choice is None else "tool_choice: requires tools"
    names = set()
    for index, tool in enumerate(tools if isinstance(tools, list) else [None]):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            return f"tools.{index}: needs a name"
        schema = tool.get("input_schema")
        if not isinstance(schema, dict) or schema.get("type") != "object":
            return f"tools.{index}.input_schema: must be an object schema with type object"
        names.add(tool["name"])
    if choice is None:
        return None
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind not in _CHOICE_FIELDS:
        return f"tool_choice: invalid {choice!r}"
    if extra := set(choice) - _CHOICE_FIELDS[kind]:
        return f"tool_choice.{kind}.{sorted(extra)[0]}: Extra inputs are not permitted"
    if kind == "tool" and choice.get("name") not in names:
        return f"tool_choice.name: unknown tool {choice.get('name')!r}"
    return None
