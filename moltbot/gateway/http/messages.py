"""OpenAI chat `messages[]` and `tools` into the turn model (moltbot.content), checked once.

Every refusal is an `InvalidRequest` whose `param` names the field (`messages[2].tool_calls[0].id`),
so the client sees what to fix. Caps keep what one request can make the gateway hold small:
messages, text, images, tools.

A request's messages split into the turn's input (the last user message, or the trailing tool
results with the assistant message whose calls they answer) and the context before it, which
the model sees as real messages but the session does not store (a client that sends the whole
chat each time would otherwise store it again and again).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from moltbot.content import (
    ImagePart,
    Message,
    NamedTool,
    Part,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
    ToolSet,
)
from moltbot.gateway.errors import InvalidRequest
from moltbot.images import ImageError, image_from_data_url

MAX_MESSAGES = 2048
MAX_TEXT_CHARS = 4_000_000  # all text of a request together: contents, arguments, results
MAX_IMAGES = 8
MAX_IMAGE_BYTES = 20 * 1024 * 1024  # decoded, all images of a request together
MAX_TOOLS = 128
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


@dataclass(frozen=True, slots=True)
class ImageUrl:
    """An http(s) image URL, for the endpoint to fetch before the turn starts."""

    url: str
    param: str


# Where a fetched image goes: messages hold this placeholder, in the order of `image_urls`.
PENDING_IMAGE = ImagePart("", 0)


@dataclass(frozen=True, slots=True)
class ChatTurn:
    system: str | None  # system and developer messages, joined
    context: tuple[Message, ...]
    input: tuple[Message, ...]
    image_urls: tuple[ImageUrl, ...] = ()  # each stands for one PENDING_IMAGE, in order
    image_bytes: int = 0  # of the inline images

    def with_images(self, images: list[ImagePart]) -> ChatTurn:
        """The turn with each PENDING_IMAGE replaced by the next of `images`, in order."""
        remaining = iter(images)
        context = _fill(self.context, remaining)
        return replace(self, context=context, input=_fill(self.input, remaining), image_urls=())


class Budget:
    """What the request has used of the caps so far (text, images)."""

    def __init__(self) -> None:
        self.chars = 0
        self.images = 0
        self.image_bytes = 0

    def text(self, text: str, param: str) -> str:
        self.chars += len(text)
        if self.chars > MAX_TEXT_CHARS:
            raise InvalidRequest(
                f"the request holds more than {MAX_TEXT_CHARS} characters of text", param=param
            )
        return text

    def image(self, size: int, param: str) -> None:
        self.images += 1
        self.image_bytes += size
        if self.images > MAX_IMAGES:
            raise InvalidRequest(f"at most {MAX_IMAGES} images per request", param=param)
        if self.image_bytes > MAX_IMAGE_BYTES:
            raise InvalidRequest(
                f"images may hold at most {MAX_IMAGE_BYTES} bytes per request", param=param
            )


def parse_messages(value: Any, *, fetch_image_urls: bool = False) -> ChatTurn:
    """`fetch_image_urls`: http(s) image URLs become PENDING_IMAGE parts to fetch; when off
    they are refused."""
    if not isinstance(value, list):
        raise InvalidRequest("messages must be an array of message objects", param="messages")
    if len(value) > MAX_MESSAGES:
        raise InvalidRequest(f"at most {MAX_MESSAGES} messages per request", param="messages")
    budget = Budget()
    system: list[str] = []
    conversation: list[Message] = []
    urls: list[ImageUrl] = []
    for index, raw in enumerate(value):
        param = f"messages[{index}]"
        if not isinstance(raw, dict) or not isinstance(raw.get("role"), str):
            raise InvalidRequest("each message must be an object with a string role", param=param)
        role = raw["role"]
        if role in ("system", "developer"):
            text = _text_only(raw.get("content"), f"{param}.content", budget).strip()
            if text:
                system.append(text)
        elif role == "user":
            content, found = _user_content(raw.get("content"), f"{param}.content", budget)
            if found and not fetch_image_urls:
                raise InvalidRequest(
                    "image URLs are not fetched by this gateway (gateway.http.images.allowUrl "
                    "is off); send the image inline as a data: URL",
                    param=found[0].param,
                )
            urls.extend(found)
            conversation.append(Message("user", content))
        elif role == "assistant":
            conversation.append(_assistant(raw, param, budget))
        elif role == "tool":
            conversation.append(_tool_result(raw, param, conversation, budget))
        elif role == "function":
            raise InvalidRequest(
                'role "function" is the deprecated function-calling API; send tool messages '
                "with tool_call_id",
                param=f"{param}.role",
            )
        else:
            raise InvalidRequest(f'unknown role "{role}"', param=f"{param}.role")
    context, turn_input = _split(conversation)
    system_text = "\n\n".join(system) or None
    return ChatTurn(system_text, context, turn_input, tuple(urls), budget.image_bytes)


def _split(conversation: list[Message]) -> tuple[tuple[Message, ...], tuple[Message, ...]]:
    if not conversation:
        raise InvalidRequest("Missing user message in `messages`.", param="messages")
    last = conversation[-1]
    if last.role == "user":
        return tuple(conversation[:-1]), (last,)
    if last.role == "tool":
        start = len(conversation) - 1
        while conversation[start].role == "tool":
            start -= 1  # stops at the assistant message: _tool_result checked it is there
        return tuple(conversation[:start]), tuple(conversation[start:])
    raise InvalidRequest(
        "the last message must be a user message or tool results", param="messages"
    )


# -- one message ----------------------------------------------------------------------------


def _text_only(content: Any, param: str, budget: Budget) -> str:
    """String content, or the text parts of array content (joined by newlines)."""
    if content is None or isinstance(content, str):
        return budget.text(content or "", param)
    if not isinstance(content, list):
        raise InvalidRequest("content must be a string or an array of parts", param=param)
    texts = []
    for index, part in enumerate(content):
        text = _text_part(part, f"{param}[{index}]")
        if text is None:
            raise InvalidRequest("only text parts are allowed here", param=f"{param}[{index}]")
        texts.append(budget.text(text, param))
    return "\n".join(texts)


def _text_part(part: Any, param: str) -> str | None:
    """The text of a `text` / `input_text` part; None for other part types."""
    if not isinstance(part, dict):
        raise InvalidRequest("each content part must be an object", param=param)
    kind = part.get("type")
    if kind not in ("text", "input_text", None):
        return None
    if isinstance(part.get("text"), str):
        return part["text"]
    if isinstance(part.get("input_text"), str):
        return part["input_text"]  # an older shape the reference reads too
    if kind is None:
        raise InvalidRequest("content parts need a type", param=f"{param}.type")
    raise InvalidRequest("text parts need a string text", param=f"{param}.text")


def _user_content(
    content: Any, param: str, budget: Budget
) -> tuple[tuple[Part, ...], list[ImageUrl]]:
    if content is None or isinstance(content, str):
        text = budget.text(content or "", param)
        return ((TextPart(text),) if text else ()), []
    if not isinstance(content, list):
        raise InvalidRequest("content must be a string or an array of parts", param=param)
    parts: list[Part] = []
    urls: list[ImageUrl] = []
    for index, raw in enumerate(content):
        where = f"{param}[{index}]"
        text = _text_part(raw, where)
        if text is not None:
            parts.append(TextPart(budget.text(text, where)))
        elif raw.get("type") in ("image_url", "input_image"):
            image, url = image_part(raw, where, budget)
            parts.append(image)
            if url is not None:
                urls.append(url)
        else:
            kind = raw.get("type")
            raise InvalidRequest(
                f"content part type {json.dumps(kind)} is not supported (text and image_url are)",
                param=f"{where}.type",
            )
    return tuple(parts), urls


def image_part(
    raw: dict[str, Any], param: str, budget: Budget
) -> tuple[ImagePart, ImageUrl | None]:
    """The image of an `image_url` / `input_image` part (`image_url` a URL or `{url}`)."""
    field = raw.get("image_url")
    url = field.get("url") if isinstance(field, dict) else field
    if not isinstance(url, str) or not url:
        raise InvalidRequest("image_url parts need image_url.url", param=f"{param}.image_url")
    param = f"{param}.image_url.url" if isinstance(field, dict) else f"{param}.image_url"
    if url[:8].lower().startswith(("http://", "https://")):
        budget.image(0, param)  # counted now; its bytes once fetched (with_fetched_images)
        return PENDING_IMAGE, ImageUrl(url, param)
    try:
        image = image_from_data_url(url)
    except ImageError as exc:
        raise InvalidRequest(str(exc), param=param) from None
    budget.image(image.size, param)
    return image, None


def _assistant(raw: dict[str, Any], param: str, budget: Budget) -> Message:
    text = _text_only(raw.get("content"), f"{param}.content", budget)
    calls = raw.get("tool_calls")
    if calls is None:
        return Message("assistant", (TextPart(text),) if text else ())
    if not isinstance(calls, list):
        raise InvalidRequest("tool_calls must be an array", param=f"{param}.tool_calls")
    parsed = tuple(
        _tool_call(call, f"{param}.tool_calls[{i}]", budget) for i, call in enumerate(calls)
    )
    ids = [c.id for c in parsed]
    if len(set(ids)) != len(ids):
        raise InvalidRequest("tool call ids must be unique", param=f"{param}.tool_calls")
    return Message("assistant", (TextPart(text),) if text else (), parsed)


def _tool_call(raw: Any, param: str, budget: Budget) -> ToolCall:
    if not isinstance(raw, dict):
        raise InvalidRequest("each tool call must be an object", param=param)
    call_id = raw.get("id")
    if not isinstance(call_id, str) or not call_id:
        raise InvalidRequest("tool calls need a string id", param=f"{param}.id")
    if raw.get("type", "function") != "function":
        raise InvalidRequest('only "function" tool calls are supported', param=f"{param}.type")
    function = raw.get("function")
    if not isinstance(function, dict):
        raise InvalidRequest("tool calls need a function object", param=f"{param}.function")
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequest("tool calls need a function name", param=f"{param}.function.name")
    arguments = function.get("arguments", "{}")
    if isinstance(arguments, dict):  # some clients send the object itself
        arguments = json.dumps(arguments)
    if not isinstance(arguments, str):
        raise InvalidRequest(
            "function.arguments must be a JSON string", param=f"{param}.function.arguments"
        )
    return ToolCall(call_id, name, budget.text(arguments, param))


def _tool_result(
    raw: dict[str, Any], param: str, conversation: list[Message], budget: Budget
) -> Message:
    call_id = raw.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise InvalidRequest("tool messages need a tool_call_id", param=f"{param}.tool_call_id")
    # It must answer a call of the assistant message before this run of tool messages.
    answered = {m.tool_call_id for m in _trailing_results(conversation)}
    before = conversation[len(conversation) - len(answered) - 1] if conversation else None
    calls = {c.id for c in before.tool_calls} if before and before.role == "assistant" else set()
    if call_id not in calls:
        raise InvalidRequest(
            f'tool message answers unknown tool call "{call_id}": it must follow the assistant '
            "message with that call",
            param=f"{param}.tool_call_id",
        )
    if call_id in answered:
        raise InvalidRequest(
            f'tool call "{call_id}" is answered twice', param=f"{param}.tool_call_id"
        )
    text = _text_only(raw.get("content"), f"{param}.content", budget)
    return Message("tool", (TextPart(text),) if text else (), tool_call_id=call_id)


def _trailing_results(conversation: list[Message]) -> list[Message]:
    results = []
    for message in reversed(conversation):
        if message.role != "tool":
            break
        results.append(message)
    return results


# -- tools ----------------------------------------------------------------------------------


def parse_tools(body: dict[str, Any]) -> ToolSet:
    for legacy in ("functions", "function_call"):
        if body.get(legacy) is not None:
            raise InvalidRequest(
                f"{legacy} is the deprecated function-calling API; use tools and tool_choice",
                param=legacy,
            )
    return tool_set(body, _tool, _tool_choice)


ToolReader = Callable[[Any, str], Tool]
ChoiceReader = Callable[[Any, tuple[Tool, ...]], ToolChoice | None]


def tool_set(body: dict[str, Any], read_tool: ToolReader, read_choice: ChoiceReader) -> ToolSet:
    """`tools`, `tool_choice` and `parallel_tool_calls`, checked and capped; the readers take
    one tool and the choice in the endpoint's own shape (chat nests them, Responses does not)."""
    raw_tools = body.get("tools")
    tools: tuple[Tool, ...] = ()
    if raw_tools is not None:
        if not isinstance(raw_tools, list):
            raise InvalidRequest("tools must be an array", param="tools")
        if len(raw_tools) > MAX_TOOLS:
            raise InvalidRequest(f"at most {MAX_TOOLS} tools per request", param="tools")
        tools = tuple(read_tool(t, f"tools[{i}]") for i, t in enumerate(raw_tools))
        names = [t.name for t in tools]
        if len(set(names)) != len(names):
            raise InvalidRequest("tool names must be unique", param="tools")
    parallel = body.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise InvalidRequest("parallel_tool_calls must be a boolean", param="parallel_tool_calls")
    return ToolSet(tools, read_choice(body.get("tool_choice"), tools), parallel)


def _tool(raw: Any, param: str) -> Tool:
    if not isinstance(raw, dict) or raw.get("type") != "function":
        raise InvalidRequest('each tool must be an object of type "function"', param=param)
    function = raw.get("function")
    if not isinstance(function, dict):
        raise InvalidRequest("tools need a function object", param=f"{param}.function")
    name = function.get("name")
    if not isinstance(name, str) or not TOOL_NAME.match(name):
        raise InvalidRequest(
            "function.name must be 1-64 letters, digits, _ or -", param=f"{param}.function.name"
        )
    description = function.get("description")
    if description is not None and not isinstance(description, str):
        raise InvalidRequest(
            "function.description must be a string", param=f"{param}.function.description"
        )
    parameters = function.get("parameters", EMPTY_PARAMETERS)
    if not isinstance(parameters, dict):
        raise InvalidRequest(
            "function.parameters must be a JSON schema object",
            param=f"{param}.function.parameters",
        )
    return Tool(name, description, parameters)


def _tool_choice(raw: Any, tools: tuple[Tool, ...]) -> ToolChoice | None:
    if raw is None:
        return None
    if raw in ("auto", "none", "required"):
        if raw == "required" and not tools:
            raise InvalidRequest('tool_choice "required" needs tools', param="tool_choice")
        return raw  # type: ignore[no-any-return]
    function = raw.get("function") if isinstance(raw, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(raw, dict) or raw.get("type") != "function" or not isinstance(name, str):
        raise InvalidRequest(
            'tool_choice must be "auto", "none", "required" or '
            '{"type": "function", "function": {"name": ...}}',
            param="tool_choice",
        )
    if name not in {t.name for t in tools}:
        raise InvalidRequest(f'tool_choice names unknown tool "{name}"', param="tool_choice")
    return NamedTool(name)


def _fill(messages: tuple[Message, ...], images: Iterator[ImagePart]) -> tuple[Message, ...]:
    out = []
    for message in messages:
        if PENDING_IMAGE in message.content:
            parts = tuple(next(images) if p == PENDING_IMAGE else p for p in message.content)
            message = replace(message, content=parts)
        out.append(message)
    return tuple(out)
