"""The turn model: messages made of typed parts, tool calls and tool results.

One vocabulary for the whole path. Transports (HTTP, WebSocket) convert their wire shapes into
it once; the runtime and the session store keep it; each provider converts it into its own wire
format. `message_to_json` / `message_from_json` are the store's encoding (camelCase keys, like
the reference's transcripts).

Images are kept as base64 text: both provider formats want base64 (OpenAI inside a data URL),
so it is decoded once to be checked and never re-encoded. The store keeps an image's type and
size but not its bytes; a stored image goes back to the model as a short text note.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

Role = Literal["user", "assistant", "tool"]
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")


@dataclass(frozen=True, slots=True)
class TextPart:
    text: str


@dataclass(frozen=True, slots=True)
class ImagePart:
    media_type: str  # one of IMAGE_TYPES
    size: int  # decoded bytes
    data: str | None = None  # base64; None once stored (only the note is kept)

    def note(self) -> str:
        """What a model is told about an image whose bytes are no longer kept."""
        return f"[image: {self.media_type}, {self.size} bytes, not kept in the history]"


Part = TextPart | ImagePart


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as the model wrote it


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: tuple[Part, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()  # assistant messages only
    tool_call_id: str | None = None  # tool messages only: the call this answers
    is_error: bool = False  # tool messages only: the result reports a failure

    @property
    def text(self) -> str:
        """The text parts, one per line (a client's parts are separate paragraphs)."""
        content = self.content
        if len(content) == 1 and type(content[0]) is TextPart:  # most messages: one text
            return content[0].text
        texts = [p.text for p in content if isinstance(p, TextPart)]
        return texts[0] if len(texts) == 1 else "\n".join(texts)

    @property
    def images(self) -> tuple[ImagePart, ...]:
        if self.has_images:
            return tuple(p for p in self.content if isinstance(p, ImagePart))
        return ()

    @property
    def has_images(self) -> bool:
        content = self.content
        if len(content) == 1:  # most messages: one text part, checked without a generator
            return type(content[0]) is ImagePart
        return any(isinstance(p, ImagePart) for p in content)

    @property
    def is_plain_text(self) -> bool:
        """Only text (or nothing): storable as one string."""
        return (
            not self.tool_calls
            and self.tool_call_id is None
            and not self.is_error
            and all(isinstance(p, TextPart) for p in self.content)
        )


def user_text(text: str) -> Message:
    return Message("user", (TextPart(text),) if text else ())


def assistant_text(text: str) -> Message:
    return Message("assistant", (TextPart(text),) if text else ())


@dataclass(frozen=True, slots=True)
class Tool:
    """A function the model may call (a client's tool: it runs on the client's side)."""

    name: str
    description: str | None
    parameters: dict[str, Any]  # JSON schema, passed through unchanged


ToolChoiceMode = Literal["auto", "none", "required"]


@dataclass(frozen=True, slots=True)
class NamedTool:
    name: str


ToolChoice = ToolChoiceMode | NamedTool


@dataclass(frozen=True, slots=True)
class ToolSet:
    """The client tools offered for one turn and how the model may use them."""

    tools: tuple[Tool, ...] = ()
    choice: ToolChoice | None = None  # None: the provider's default
    parallel: bool | None = None  # parallel_tool_calls; None: the provider's default


NO_TOOLS = ToolSet()


# -- the store's encoding -------------------------------------------------------------------


def message_to_json(message: Message) -> dict[str, Any]:
    """The stored form: image bytes are left out (the type and size stay)."""
    content = [_part_json(p) for p in message.content]
    data: dict[str, Any] = {"role": message.role, "content": content}
    if message.tool_calls:
        data["toolCalls"] = [
            {"id": c.id, "name": c.name, "arguments": c.arguments} for c in message.tool_calls
        ]
    if message.tool_call_id is not None:
        data["toolCallId"] = message.tool_call_id
    if message.is_error:
        data["isError"] = True
    return data


def without_image_bytes(message: Message) -> Message:
    """The message as the store keeps it: its images' type and size, not their bytes."""
    if all(isinstance(p, TextPart) or p.data is None for p in message.content):
        return message
    parts = tuple(
        ImagePart(p.media_type, p.size) if isinstance(p, ImagePart) else p for p in message.content
    )
    return replace(message, content=parts)


def _part_json(part: Part) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    return {"type": "image", "mimeType": part.media_type, "size": part.size}


def message_from_json(data: dict[str, Any]) -> Message:
    parts: list[Part] = []
    for part in data.get("content") or ():
        if part.get("type") == "image":
            parts.append(ImagePart(str(part.get("mimeType")), int(part.get("size") or 0)))
        else:
            parts.append(TextPart(str(part.get("text") or "")))
    calls = tuple(
        ToolCall(str(c["id"]), str(c["name"]), str(c.get("arguments") or "{}"))
        for c in data.get("toolCalls") or ()
    )
    return Message(
        data["role"], tuple(parts), calls, data.get("toolCallId"), bool(data.get("isError"))
    )


# -- a conversation every provider accepts ---------------------------------------------------

MISSING_RESULT = "No result was provided for this tool call."


def well_formed(messages: list[Message]) -> list[Message]:
    """The messages in an order providers accept: every tool call of an assistant message is
    answered by a tool message right after it, and no tool message lacks its call.

    A call left unanswered (a client that moved on, a window cut) gets an error-like result,
    as providers reject orphans; a result whose call is not right before it is dropped."""
    out: list[Message] = []
    open_calls: list[str] = []  # ids of the last assistant message's calls still unanswered
    for message in messages:
        if message.role == "tool":
            if message.tool_call_id in open_calls:
                open_calls.remove(message.tool_call_id)
                out.append(message)
            continue
        if open_calls:
            out.extend(_missing_results(open_calls))
        has_calls = message.tool_calls and message.role == "assistant"
        open_calls = [c.id for c in message.tool_calls] if has_calls else []
        out.append(message)
    out.extend(_missing_results(open_calls))
    return out


def _missing_results(call_ids: list[str]) -> list[Message]:
    return [Message("tool", (TextPart(MISSING_RESULT),), tool_call_id=i) for i in call_ids]
