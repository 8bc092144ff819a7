"""Responses API output: the `response` object and the events of its stream.

`ResponseBuilder` follows a run's text and tool-call chunks as they come and keeps the output
items they make, in order: a `message` item for text, a `function_call` item per tool call. A
new item closes the one before, as OpenAI streams them: an item's `done` events come before
the next item is added. For a stream it also makes the events, each with the next
`sequence_number` (from 0); `finish` closes the last item, settles the status and returns the
final response object. Nothing here knows about aiohttp or the runtime.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from moltbot.content import NamedTool, Tool, ToolChoice
from moltbot.gateway.http.responses_protocol import ResponsesRequest
from moltbot.providers.base import Usage

Event = tuple[str, bytes]  # (type, the event as JSON)


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a response failed, in its `error` object."""

    code: str  # "server_error" or "rate_limit_exceeded", as OpenAI names them
    message: str


def failure_code(kind: str | None) -> str:
    return "rate_limit_exceeded" if kind == "rate_limit" else "server_error"


@dataclass(slots=True)
class _Message:
    id: str
    parts: list[str] = field(default_factory=list)
    status: str = "in_progress"

    def part(self) -> dict[str, Any]:
        return {
            "type": "output_text",
            "text": "".join(self.parts),
            "annotations": [],
            "logprobs": [],
        }

    def json(self) -> dict[str, Any]:
        content = [] if self.status == "in_progress" and not self.parts else [self.part()]
        return {
            "id": self.id,
            "type": "message",
            "status": self.status,
            "role": "assistant",
            "content": content,
        }


@dataclass(slots=True)
class _Call:
    id: str
    call_id: str
    name: str
    arguments: list[str] = field(default_factory=list)
    status: str = "in_progress"

    def json(self, *, opening: bool = False) -> dict[str, Any]:
        arguments = "" if opening else "".join(self.arguments) or "{}"
        return {
            "id": self.id,
            "type": "function_call",
            "status": self.status,
            "call_id": self.call_id,
            "name": self.name,
            "arguments": arguments,
        }


class ResponseBuilder:
    def __init__(self, response_id: str, request: ResponsesRequest, *, streaming: bool) -> None:
        self.id = response_id
        self.created_at = int(time.time())
        self._request = request
        self._items: list[_Message | _Call] = []
        self._open: _Message | _Call | None = None
        self._calls: dict[int, _Call] = {}  # by the answer's tool-call index
        self._events: list[Event] | None = [] if streaming else None
        self._seq = 0

    def take_events(self) -> tuple[Event, ...]:
        """The events made since the last call."""
        events = tuple(self._events or ())
        if self._events:
            self._events.clear()
        return events

    # -- what the run sends ------------------------------------------------------------------

    def opening(self) -> None:
        """`response.created` and `response.in_progress`, the first events of a stream."""
        snapshot = self._object("in_progress", [], None)
        self._emit("response.created", response=snapshot)
        self._emit("response.in_progress", response=snapshot)

    def text(self, delta: str) -> None:
        if not delta:
            return
        item = self._open
        if not isinstance(item, _Message):
            item = self._add(_Message(f"msg_{uuid.uuid4().hex}"))
            self._emit(
                "response.content_part.added",
                item_id=item.id,
                output_index=len(self._items) - 1,
                content_index=0,
                part={"type": "output_text", "text": "", "annotations": [], "logprobs": []},
            )
        item.parts.append(delta)
        self._emit(
            "response.output_text.delta",
            item_id=item.id,
            output_index=len(self._items) - 1,
            content_index=0,
            delta=delta,
            logprobs=[],
        )

    def tool_call(self, index: int, call_id: str | None, name: str | None, arguments: str) -> None:
        call = self._calls.get(index)
        if call is None:
            call = _Call(
                f"fc_{uuid.uuid4().hex}", call_id or f"call_{uuid.uuid4().hex}", name or ""
            )
            self._calls[index] = call
            self._add(call)
        elif name and not call.name:
            call.name = name
        if not arguments:
            return
        call.arguments.append(arguments)
        # Providers stream calls one after another; a fragment for a call already closed
        # (none known does this) still reaches the final output, just not as a delta.
        if call is self._open:
            self._emit(
                "response.function_call_arguments.delta",
                item_id=call.id,
                output_index=len(self._items) - 1,
                delta=arguments,
            )

    def finish(
        self, *, finish_reason: str, usage: Usage | None, failure: Failure | None
    ) -> dict[str, Any]:
        """Close the output, make the terminal event; the final response object."""
        incomplete = failure is None and finish_reason == "length"
        if failure is None:
            self._close("incomplete" if incomplete else "completed")
        elif self._open is not None:
            self._open.status = "incomplete"  # no done events: response.failed says it all
        status = "failed" if failure else "incomplete" if incomplete else "completed"
        final = self._object(status, [i.json() for i in self._items], usage, failure)
        self._emit(f"response.{status}", response=final)
        return final

    def error(self, message: str) -> None:
        """An `error` event: the stream itself broke (the gateway's fault, not the model's)."""
        self._emit("error", code="server_error", message=message, param=None)

    # -- items -------------------------------------------------------------------------------

    def _add(self, item: _Message | _Call) -> Any:
        self._close("completed")
        self._items.append(item)
        self._open = item
        opening = item.json(opening=True) if isinstance(item, _Call) else item.json()
        self._emit("response.output_item.added", output_index=len(self._items) - 1, item=opening)
        return item

    def _close(self, status: str) -> None:
        item, self._open = self._open, None
        if item is None:
            return
        item.status = status
        where: dict[str, Any] = {"item_id": item.id, "output_index": self._items.index(item)}
        if isinstance(item, _Message):
            part = item.part()
            self._emit(
                "response.output_text.done",
                **where,
                content_index=0,
                text=part["text"],
                logprobs=[],
            )
            self._emit("response.content_part.done", **where, content_index=0, part=part)
        else:
            done = item.json()
            self._emit(
                "response.function_call_arguments.done", **where, arguments=done["arguments"]
            )
        self._emit(
            "response.output_item.done", output_index=where["output_index"], item=item.json()
        )

    # -- the response object -----------------------------------------------------------------

    def _object(
        self,
        status: str,
        output: list[dict[str, Any]],
        usage: Usage | None,
        failure: Failure | None = None,
    ) -> dict[str, Any]:
        request = self._request
        ended = status not in ("in_progress", "failed")
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "completed_at": int(time.time()) if ended else None,
            "error": {"code": failure.code, "message": failure.message} if failure else None,
            "incomplete_details": (
                {"reason": "max_output_tokens"} if status == "incomplete" else None
            ),
            "instructions": request.instructions,
            "max_output_tokens": request.sampling.max_tokens,
            "metadata": request.metadata,
            "model": request.model,
            "output": output,
            "parallel_tool_calls": request.tools.parallel is not False,
            "previous_response_id": request.previous_response_id,
            "reasoning": {"effort": None, "summary": None},  # never applied
            "store": request.store,
            "temperature": request.sampling.temperature,
            "text": {"format": {"type": "text"}},
            "tool_choice": tool_choice_json(request.tools.choice),
            "tools": [tool_json(t) for t in request.tools.tools],
            "top_p": request.sampling.top_p,
            "truncation": request.truncation,
            "usage": usage_json(usage) if usage is not None else None,
            "user": request.user,
        }

    def _emit(self, kind: str, **fields: Any) -> None:
        if self._events is None:
            return
        event = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        self._events.append((kind, orjson.dumps(event)))


def tool_json(tool: Tool) -> dict[str, Any]:
    return {
        "type": "function",
        "name": tool.name,
        "description": tool.description,
        "parameters": tool.parameters,
        "strict": None,  # schemas go to the model as they are; adherence is not enforced
    }


def tool_choice_json(choice: ToolChoice | None) -> Any:
    if isinstance(choice, NamedTool):
        return {"type": "function", "name": choice.name}
    return choice or "auto"


def usage_json(usage: Usage) -> dict[str, Any]:
    """OpenAI counts cached prompt tokens inside input_tokens, as chat completions does."""
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {
            "cached_tokens": usage.cache_read_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
        },
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.prompt_tokens + usage.output_tokens,
    }
