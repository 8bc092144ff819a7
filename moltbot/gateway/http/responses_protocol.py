"""OpenAI Responses API requests (`POST /v1/responses`) into the turn model, checked once.

`input` is a string (one user message) or a list of items: `message` items (role user,
assistant, system or developer; content a string or `input_text` / `output_text` /
`input_image` parts), `function_call` items (a call the model made earlier) and
`function_call_output` items (the client's result for one). They become the turn model's
messages in order: function calls join the assistant message before them, outputs become tool
messages. System and developer messages, and `instructions`, become extra system prompt.

Every field of the request is either honoured, accepted and ignored where that cannot change
what the client gets, or refused with a 400 naming it (`param`); unknown fields are refused,
as OpenAI does. The caps are those of chat completions (moltbot.gateway.http.messages).
Nothing here knows about aiohttp or the runtime.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
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
from moltbot.gateway.http.messages import (
    EMPTY_PARAMETERS,
    MAX_MESSAGES,
    PENDING_IMAGE,
    TOOL_NAME,
    Budget,
    ImageUrl,
    image_part,
    tool_set,
)
from moltbot.providers.base import SamplingParams

MAX_SAFE_INTEGER = 2**53 - 1
MAX_METADATA_KEYS = 16
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 512
MAX_INCLUDE = 32
MAX_ID_CHARS = 256  # previous_response_id, call ids
TEXT_TYPES = ("input_text", "output_text")


@dataclass(frozen=True, slots=True)
class PriorResult:
    """A function_call_output whose call is not in this request: it must answer a call of the
    previous response (checked once that is known)."""

    call_id: str
    param: str


@dataclass(frozen=True, slots=True)
class ResponsesRequest:
    model: str
    conversation: tuple[Message, ...]  # the input items, in order (system text taken out)
    system: str | None  # instructions, then system and developer messages
    instructions: str | None
    tools: ToolSet
    sampling: SamplingParams
    stream: bool = False
    store: bool = True
    user: str | None = None
    previous_response_id: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    truncation: str = "disabled"
    prior_results: tuple[PriorResult, ...] = ()
    image_urls: tuple[ImageUrl, ...] = ()  # to fetch; each stands for one PENDING_IMAGE
    image_bytes: int = 0  # of the inline images

    def with_images(self, images: list[ImagePart]) -> ResponsesRequest:
        """The request with each PENDING_IMAGE replaced by the next of `images`, in order."""
        remaining = iter(images)
        conversation = tuple(_filled(m, remaining) for m in self.conversation)
        return replace(self, conversation=conversation, image_urls=())

    def check_prior_results(self, open_calls: frozenset[str]) -> None:
        """Outputs for calls outside this request must answer calls the previous response
        left open (none without previous_response_id)."""
        for result in self.prior_results:
            if result.call_id in open_calls:
                continue
            where = (
                "the previous response made no such call"
                if self.previous_response_id
                else "no function_call item with that call_id comes before it"
            )
            raise InvalidRequest(
                f'function_call_output answers unknown call "{result.call_id}": {where}',
                param=result.param,
            )

    def split(self, *, append: bool) -> tuple[tuple[Message, ...], tuple[Message, ...]]:
        """(context, input) of the turn. `append`: every item is new to the session (a fresh
        one, or one continued by previous_response_id), so all of it is the turn's input and
        is stored. Else, as for chat completions, the input is the last user message or the
        trailing outputs with the calls they answer, and the items before are context."""
        if append:
            return (), self.conversation
        messages = self.conversation
        start = len(messages) - 1
        while start > 0 and messages[start].role == "tool":
            start -= 1  # stops at the assistant message with the calls
        return messages[:start], messages[start:]


def _filled(message: Message, images: Iterator[ImagePart]) -> Message:
    if PENDING_IMAGE not in message.content:
        return message
    return replace(
        message, content=tuple(next(images) if p == PENDING_IMAGE else p for p in message.content)
    )


def parse_responses_request(body: Any, *, fetch_image_urls: bool = False) -> ResponsesRequest:
    """`fetch_image_urls`: http(s) image URLs become PENDING_IMAGE parts to fetch (listed in
    `image_urls`); when off they are refused."""
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    for name, value in body.items():
        _check_field(name, value)
    read = _Conversation(Budget(), fetch_image_urls)
    instructions = _optional(body, "instructions", str)
    if instructions:
        read.budget.text(instructions, "instructions")
    _parse_input(body.get("input"), read)
    tools = _parse_tools(body)
    stream = _optional(body, "stream", bool)
    store = _optional(body, "store", bool)
    return ResponsesRequest(
        model=_optional(body, "model", str) or "moltbot",
        conversation=tuple(read.messages),
        system="\n\n".join(t for t in (instructions, *read.system) if t and t.strip()) or None,
        instructions=instructions,
        tools=tools,
        sampling=SamplingParams(
            temperature=_ranged(body, "temperature", 0, 2),
            top_p=_ranged(body, "top_p", 0, 1),
            max_tokens=_positive_int(body, "max_output_tokens"),
        ),
        stream=bool(stream),
        store=store is not False,
        user=_optional(body, "user", str) or None,
        previous_response_id=_previous_id(body),
        metadata=_metadata(body.get("metadata")),
        truncation=_optional(body, "truncation", str) or "disabled",
        prior_results=tuple(read.prior),
        image_urls=tuple(read.urls),
        image_bytes=read.budget.image_bytes,
    )


# -- the request's fields ---------------------------------------------------------------------


def _check_field(name: str, value: Any) -> None:
    """Refuse unknown fields and values that ask for what the gateway cannot do."""
    if name in _HONOURED or value is None:
        return
    check = _IGNORED.get(name)
    if check is not None:
        check(name, value)
        return
    message = _REFUSED.get(name, f"Unknown parameter: '{name}'.")
    raise InvalidRequest(message, param=name, code="unsupported_parameter")


_HONOURED = frozenset(
    (
        "model", "input", "instructions", "previous_response_id", "stream", "store", "user",
        "metadata", "max_output_tokens", "temperature", "top_p", "tools", "tool_choice",
        "parallel_tool_calls",
    )
)  # fmt: skip
_REFUSED = {
    "conversation": "conversations are not supported; continue with previous_response_id, or "
    "keep a session with x-moltbot-session-key or user",
    "prompt": "prompt templates are not supported; send instructions and input",
    "context_management": "context management (compaction) is not supported",
}


def _kind(expected: type, what: str) -> Callable[[str, Any], None]:
    def check(name: str, value: Any) -> None:
        if not isinstance(value, expected):
            raise InvalidRequest(f"{name} must be {what}", param=name)

    return check


def _one_of(*choices: str) -> Callable[[str, Any], None]:
    def check(name: str, value: Any) -> None:
        if value not in choices:
            quoted = ", ".join(json.dumps(c) for c in choices)
            raise InvalidRequest(f"{name} must be one of {quoted}", param=name)

    return check


def _include(name: str, value: Any) -> None:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidRequest("include must be an array of strings", param=name)
    if len(value) > MAX_INCLUDE:
        raise InvalidRequest(f"include takes at most {MAX_INCLUDE} values", param=name)


def _text(name: str, value: Any) -> None:
    """Plain text output only: a JSON schema or JSON mode would be silently unmet."""
    if not isinstance(value, dict):
        raise InvalidRequest("text must be an object", param=name)
    fmt = value.get("format")
    if fmt is not None:
        kind = fmt.get("type") if isinstance(fmt, dict) else None
        if kind != "text":
            raise InvalidRequest(
                f"text.format type {json.dumps(kind)} is not supported: only plain text "
                "output (no json_schema or json_object structured output)",
                param="text.format.type",
            )
    verbosity = value.get("verbosity")
    if verbosity is not None and verbosity not in ("low", "medium", "high"):
        raise InvalidRequest(
            'text.verbosity must be "low", "medium" or "high"', param="text.verbosity"
        )


def _top_logprobs(name: str, value: Any) -> None:
    if value != 0 or isinstance(value, bool):
        raise InvalidRequest("log probabilities are not supported (top_logprobs)", param=name)


def _background(name: str, value: Any) -> None:
    if value is not False:
        raise InvalidRequest("background responses are not supported", param=name)


def _max_tool_calls(name: str, value: Any) -> None:
    # It limits built-in tool calls, and the gateway offers no built-in tools.
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRequest(f"{name} must be a positive integer", param=name)


# Accepted and ignored (the README says why each cannot change the answer); the value must
# still make sense.
_IGNORED: dict[str, Callable[[str, Any], None]] = {
    "reasoning": _kind(dict, "an object"),
    "truncation": _one_of("auto", "disabled"),
    "include": _include,
    "text": _text,
    "top_logprobs": _top_logprobs,
    "background": _background,
    "max_tool_calls": _max_tool_calls,
    "service_tier": _kind(str, "a string"),
    "prompt_cache_key": _kind(str, "a string"),
    "prompt_cache_retention": _kind(str, "a string"),
    "safety_identifier": _kind(str, "a string"),
    "stream_options": _kind(dict, "an object"),
}


def _optional(body: dict[str, Any], name: str, kind: type) -> Any:
    value = body.get(name)
    if value is None:
        return None
    if kind is float and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise InvalidRequest(f"{name} must be a number", param=name)
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise InvalidRequest(f"{name} must be an integer", param=name)
    if kind not in (int, float) and not isinstance(value, kind):
        names = {str: "a string", bool: "a boolean", dict: "an object", list: "an array"}
        raise InvalidRequest(f"{name} must be {names[kind]}", param=name)
    return value


def _ranged(body: dict[str, Any], name: str, low: float, high: float) -> float | None:
    value = _optional(body, name, float)
    if value is not None and not low <= value <= high:  # NaN fails too
        raise InvalidRequest(f"{name} must be between {low} and {high}", param=name)
    return value


def _positive_int(body: dict[str, Any], name: str) -> int | None:
    value = _optional(body, name, int)
    if value is not None and not 0 < value <= MAX_SAFE_INTEGER:
        raise InvalidRequest(f"{name} must be a positive integer", param=name)
    return value


def _previous_id(body: dict[str, Any]) -> str | None:
    value = _optional(body, "previous_response_id", str)
    if value is not None and not 0 < len(value) <= MAX_ID_CHARS:
        raise InvalidRequest(
            "previous_response_id must be a response id", param="previous_response_id"
        )
    return value


def _metadata(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_METADATA_KEYS:
        raise InvalidRequest(
            f"metadata must be an object of at most {MAX_METADATA_KEYS} keys", param="metadata"
        )
    for key, item in value.items():
        if len(key) > MAX_METADATA_KEY_CHARS:
            raise InvalidRequest(
                f"metadata keys are at most {MAX_METADATA_KEY_CHARS} characters", param="metadata"
            )
        if not isinstance(item, str) or len(item) > MAX_METADATA_VALUE_CHARS:
            raise InvalidRequest(
                f"metadata values are strings of at most {MAX_METADATA_VALUE_CHARS} characters",
                param=f"metadata.{key}",
            )
    return dict(value)


# -- input ------------------------------------------------------------------------------------


class _Conversation:
    """The messages the input items make, as they are read."""

    def __init__(self, budget: Budget, fetch_urls: bool) -> None:
        self.budget = budget
        self.fetch_urls = fetch_urls
        self.urls: list[ImageUrl] = []  # in the order of their PENDING_IMAGE parts
        self.system: list[str] = []
        self.messages: list[Message] = []
        self.prior: list[PriorResult] = []
        self.answered: set[str] = set()

    def add_call(self, call: ToolCall, param: str) -> None:
        """A function_call joins the assistant message right before it, if there is one."""
        last = self.messages[-1] if self.messages else None
        if last is not None and last.role == "assistant":
            if any(c.id == call.id for c in last.tool_calls):
                raise InvalidRequest(f'call_id "{call.id}" is used twice', param=f"{param}.call_id")
            self.messages[-1] = replace(last, tool_calls=(*last.tool_calls, call))
        else:
            self.messages.append(Message("assistant", (), (call,)))

    def add_result(self, call_id: str, text: str, param: str) -> None:
        """A function_call_output answers a call of the last assistant message with calls,
        with only outputs in between; before any other item, a call of the previous response."""
        if call_id in self.answered:
            raise InvalidRequest(
                f'function call "{call_id}" is answered twice', param=f"{param}.call_id"
            )
        calls = self._open_calls()
        if calls is None:
            self.prior.append(PriorResult(call_id, f"{param}.call_id"))
        elif call_id not in calls:
            raise InvalidRequest(
                f'function_call_output answers unknown call "{call_id}": it must follow the '
                "function_call item with that call_id",
                param=f"{param}.call_id",
            )
        self.answered.add(call_id)
        content = (TextPart(text),) if text else ()
        self.messages.append(Message("tool", content, tool_call_id=call_id))

    def _open_calls(self) -> set[str] | None:
        """Ids of the calls outputs may answer here; None while only outputs came so far."""
        for message in reversed(self.messages):
            if message.role == "assistant":
                return {c.id for c in message.tool_calls}
            if message.role != "tool":
                return set()
        return None


def _parse_input(value: Any, conversation: _Conversation) -> None:
    if value is None:
        raise InvalidRequest("input is required: a string or an array of items", param="input")
    if isinstance(value, str):
        text = conversation.budget.text(value, "input")
        conversation.messages.append(Message("user", (TextPart(text),)))
        return
    if not isinstance(value, list):
        raise InvalidRequest("input must be a string or an array of items", param="input")
    if len(value) > MAX_MESSAGES:
        raise InvalidRequest(f"at most {MAX_MESSAGES} input items per request", param="input")
    for index, item in enumerate(value):
        _read_item(item, f"input[{index}]", conversation)
    messages = conversation.messages
    if not messages or messages[-1].role not in ("user", "tool"):
        raise InvalidRequest(
            "input must end with a user message or function_call_output items", param="input"
        )


def _read_item(item: Any, param: str, conversation: _Conversation) -> None:
    if not isinstance(item, dict):
        raise InvalidRequest("each input item must be an object", param=param)
    kind = item.get("type", "message" if "role" in item else None)
    if kind == "message":
        _read_message(item, param, conversation)
    elif kind == "function_call":
        conversation.add_call(_function_call(item, param, conversation.budget), param)
    elif kind == "function_call_output":
        call_id = _id(item, "call_id", param)
        text = _output_text(item.get("output"), f"{param}.output", conversation.budget)
        conversation.add_result(call_id, text, param)
    elif kind == "item_reference":
        raise InvalidRequest(
            "item references are not supported; send the items, or use previous_response_id",
            param=f"{param}.type",
        )
    else:
        raise InvalidRequest(
            f"input item type {json.dumps(kind)} is not supported (message, function_call and "
            "function_call_output are)",
            param=f"{param}.type",
        )


def _read_message(item: dict[str, Any], param: str, conversation: _Conversation) -> None:
    role = item.get("role")
    content = item.get("content")
    budget = conversation.budget
    if role in ("system", "developer"):
        text = "\n".join(_text_parts(content, f"{param}.content", budget, ())).strip()
        if text:
            conversation.system.append(text)
    elif role == "user":
        parts = _user_parts(content, f"{param}.content", conversation)
        conversation.messages.append(Message("user", parts))
    elif role == "assistant":
        text = "\n".join(_text_parts(content, f"{param}.content", budget, ("refusal",)))
        conversation.messages.append(Message("assistant", (TextPart(text),) if text else ()))
    else:
        raise InvalidRequest(
            'role must be "user", "assistant", "system" or "developer"', param=f"{param}.role"
        )


def _text_parts(content: Any, param: str, budget: Budget, extra: tuple[str, ...]) -> list[str]:
    """The texts of string content or of text parts (`extra` names more text-like types)."""
    if isinstance(content, str):
        return [budget.text(content, param)]
    if not isinstance(content, list):
        raise InvalidRequest("content must be a string or an array of parts", param=param)
    texts = []
    for index, part in enumerate(content):
        where = f"{param}[{index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in (*TEXT_TYPES, *extra):
            raise InvalidRequest(_part_refusal(kind, "text"), param=f"{where}.type")
        texts.append(_part_text(part, where, budget))
    return texts


def _part_text(part: dict[str, Any], param: str, budget: Budget) -> str:
    key = "refusal" if part.get("type") == "refusal" else "text"
    if not isinstance(part.get(key), str):
        raise InvalidRequest(f"{part['type']} parts need a string {key}", param=f"{param}.{key}")
    return budget.text(part[key], param)


def _user_parts(content: Any, param: str, conversation: _Conversation) -> tuple[Part, ...]:
    budget = conversation.budget
    if isinstance(content, str):
        return (TextPart(budget.text(content, param)),) if content else ()
    if not isinstance(content, list):
        raise InvalidRequest("content must be a string or an array of parts", param=param)
    parts: list[Part] = []
    for index, part in enumerate(content):
        where = f"{param}[{index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "input_image":
            parts.append(_image(part, where, conversation))
        elif kind in TEXT_TYPES:
            parts.append(TextPart(_part_text(part, where, budget)))
        else:
            allowed = "input_text and input_image"
            raise InvalidRequest(_part_refusal(kind, allowed), param=f"{where}.type")
    return tuple(parts)


def _image(part: dict[str, Any], param: str, conversation: _Conversation) -> ImagePart:
    """An inline image, or a PENDING_IMAGE for a URL to fetch (as chat completions does)."""
    if part.get("file_id") is not None:
        raise InvalidRequest(
            "file ids are not supported (there is no files API); send the image as a data: URL",
            param=f"{param}.file_id",
        )
    image, url = image_part(part, param, conversation.budget)
    if url is not None:
        if not conversation.fetch_urls:
            raise InvalidRequest(
                "image URLs are not fetched by this gateway (gateway.http.images.allowUrl is "
                "off); send the image inline as a data: URL",
                param=url.param,
            )
        conversation.urls.append(url)
    return image


def _part_refusal(kind: Any, allowed: str) -> str:
    if kind == "input_file":
        return "input_file parts are not supported (there is no files API)"
    return f"content part type {json.dumps(kind)} is not supported here ({allowed} parts are)"


def _function_call(item: dict[str, Any], param: str, budget: Budget) -> ToolCall:
    call_id = _id(item, "call_id", param)
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequest("function_call items need a name", param=f"{param}.name")
    arguments = item.get("arguments")
    if not isinstance(arguments, str):
        raise InvalidRequest(
            "function_call arguments must be a JSON string", param=f"{param}.arguments"
        )
    return ToolCall(call_id, name, budget.text(arguments, f"{param}.arguments"))


def _output_text(output: Any, param: str, budget: Budget) -> str:
    """A function call's output: a string, or text parts (images and files are refused)."""
    if output is None:
        raise InvalidRequest("function_call_output items need an output", param=param)
    return "\n".join(_text_parts(output, param, budget, ()))


def _id(item: dict[str, Any], key: str, param: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_CHARS:
        raise InvalidRequest(
            f"{key} must be a non-empty string of at most {MAX_ID_CHARS} characters",
            param=f"{param}.{key}",
        )
    return value


# -- tools ------------------------------------------------------------------------------------


def _parse_tools(body: dict[str, Any]) -> ToolSet:
    return tool_set(body, _tool, _tool_choice)


def _tool(raw: Any, param: str) -> Tool:
    """A function tool, in the Responses API's flat shape (name and schema at the top)."""
    if not isinstance(raw, dict):
        raise InvalidRequest("each tool must be an object", param=param)
    kind = raw.get("type")
    if kind != "function":
        raise InvalidRequest(
            f"tool type {json.dumps(kind)} is not supported: only function tools, which run "
            "on the client (built-in tools such as web_search or file_search do not exist here)",
            param=f"{param}.type",
        )
    name = raw.get("name")
    if not isinstance(name, str) or not TOOL_NAME.match(name):
        raise InvalidRequest("name must be 1-64 letters, digits, _ or -", param=f"{param}.name")
    description = raw.get("description")
    if description is not None and not isinstance(description, str):
        raise InvalidRequest("description must be a string", param=f"{param}.description")
    parameters = raw.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise InvalidRequest("parameters must be a JSON schema object", param=f"{param}.parameters")
    strict = raw.get("strict")
    if strict is not None and not isinstance(strict, bool):
        raise InvalidRequest("strict must be a boolean", param=f"{param}.strict")
    return Tool(name, description, parameters if parameters is not None else EMPTY_PARAMETERS)


def _tool_choice(raw: Any, tools: tuple[Tool, ...]) -> ToolChoice | None:
    if raw is None:
        return None
    if raw in ("auto", "none", "required"):
        if raw == "required" and not tools:
            raise InvalidRequest('tool_choice "required" needs tools', param="tool_choice")
        return raw  # type: ignore[no-any-return]
    name = raw.get("name") if isinstance(raw, dict) else None
    if not isinstance(raw, dict) or raw.get("type") != "function" or not isinstance(name, str):
        raise InvalidRequest(
            'tool_choice must be "auto", "none", "required" or {"type": "function", "name": ...}',
            param="tool_choice",
        )
    if name not in {t.name for t in tools}:
        raise InvalidRequest(f'tool_choice names unknown tool "{name}"', param="tool_choice")
    return NamedTool(name)
