"""Agent events: what a run reports, in order, to whoever consumes it.

Each event carries one typed item holding only what is new: a text fragment, a fragment of a
tool call, the usage, the start and the end. No event holds the text so far; a transport that
needs a running total (a chat view, a non-streamed answer) keeps it itself, so the memory a run
needs in flight does not grow with its answer. `seq` starts at 1 per run and grows by one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from moltbot.logs import get_logger
from moltbot.providers.base import Usage

log = get_logger("moltbot.agents")

Stream = Literal["lifecycle", "assistant", "tool", "usage"]
RunStatus = Literal["queued", "running", "ok", "error", "aborted"]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RunStarted:
    started_at: int


@dataclass(frozen=True, slots=True)
class TextChunk:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallChunk:
    """Part of the answer's `index`-th tool call: id and name in its first chunk, then
    fragments of the JSON arguments."""

    index: int
    id: str | None
    name: str | None
    arguments: str


@dataclass(frozen=True, slots=True)
class ToolStarted:
    """One of the agent's own tools is about to run (moltbot.agents.tool_loop)."""

    call_id: str
    name: str
    arguments: str  # the JSON text the model wrote


@dataclass(frozen=True, slots=True)
class ToolFinished:
    call_id: str
    name: str
    ok: bool
    summary: str  # one bounded line (moltbot.tools.base.MAX_SUMMARY_CHARS)
    duration_ms: int


@dataclass(frozen=True, slots=True)
class UsageReport:
    usage: Usage


@dataclass(frozen=True, slots=True)
class RunEnded:
    status: RunStatus  # "ok", "error" or "aborted"
    started_at: int | None
    ended_at: int
    finish_reason: str  # "stop", "length" or "tool_calls"
    model: str | None
    error: str | None = None  # the error text, or the abort reason
    error_kind: str | None = None


EventItem = (
    RunStarted | TextChunk | ToolCallChunk | ToolStarted | ToolFinished | UsageReport | RunEnded
)
# A tool event shows the call's arguments up to this many characters.
TOOL_EVENT_ARGS_CHARS = 8192


@dataclass(frozen=True, slots=True)
class AgentEvent:
    run_id: str
    seq: int
    ts: int  # ms since the epoch
    session_key: str
    item: EventItem

    @property
    def stream(self) -> Stream:
        if isinstance(self.item, TextChunk | ToolCallChunk):
            return "assistant"
        if isinstance(self.item, ToolStarted | ToolFinished):
            return "tool"
        return "usage" if isinstance(self.item, UsageReport) else "lifecycle"

    @property
    def is_terminal(self) -> bool:
        return isinstance(self.item, RunEnded)

    @property
    def phase(self) -> str | None:
        """ "start" / "end" / "error" for lifecycle events, else None."""
        if isinstance(self.item, RunStarted):
            return "start"
        if isinstance(self.item, RunEnded):
            return "error" if self.item.status == "error" else "end"
        return None

    @property
    def data(self) -> dict[str, Any]:
        """The item as the `agent` event's `data`."""
        return event_data(self.item)

    def payload(self) -> dict[str, Any]:
        """The reference's `agent` event payload. Assistant events carry the new text only
        (`delta`), not the reference's cumulative `text`: that would make a long answer cost
        quadratic bytes."""
        return {
            "runId": self.run_id,
            "seq": self.seq,
            "stream": self.stream,
            "ts": self.ts,
            "data": event_data(self.item),
            "sessionKey": self.session_key,
        }


def event_data(item: EventItem) -> dict[str, Any]:
    if isinstance(item, TextChunk):
        return {"delta": item.text}
    if isinstance(item, ToolCallChunk):
        call: dict[str, Any] = {"index": item.index, "argumentsDelta": item.arguments}
        if item.id is not None:
            call["id"] = item.id
        if item.name is not None:
            call["name"] = item.name
        return {"toolCall": call}
    if isinstance(item, ToolStarted):
        return tool_start_data(item)
    if isinstance(item, ToolFinished):
        return {
            "phase": "result",
            "name": item.name,
            "toolCallId": item.call_id,
            "isError": not item.ok,
            "result": item.summary,
            "meta": {"durationMs": item.duration_ms},
        }
    if isinstance(item, UsageReport):
        return usage_data(item.usage)
    if isinstance(item, RunStarted):
        return {"phase": "start", "startedAt": item.started_at}
    return end_data(item)


def tool_start_data(item: ToolStarted) -> dict[str, Any]:
    """`args` is the parsed arguments object; arguments that are long or not JSON are shown
    as (the start of) their text, with `argsTruncated` when cut."""
    data: dict[str, Any] = {"phase": "start", "name": item.name, "toolCallId": item.call_id}
    text = item.arguments
    if len(text) > TOOL_EVENT_ARGS_CHARS:
        data.update(args=text[:TOOL_EVENT_ARGS_CHARS], argsTruncated=True)
        return data
    try:
        data["args"] = json.loads(text) if text else {}
    except ValueError:
        data["args"] = text
    return data


def end_data(end: RunEnded) -> dict[str, Any]:
    data: dict[str, Any] = {"startedAt": end.started_at, "endedAt": end.ended_at}
    if end.status == "error":
        return {"phase": "error", **data, "error": end.error, "kind": end.error_kind}
    data.update(
        phase="end",
        aborted=end.status == "aborted",
        finishReason=end.finish_reason,
        model=end.model,
    )
    if end.status == "aborted":
        data["reason"] = end.error
    return data


def event_from_payload(payload: dict[str, Any]) -> AgentEvent | None:
    """An `agent` event payload (relayed from another process) as an event again: its text,
    usage and end, which is what a chat view needs; None for anything else."""
    data = payload.get("data")
    run_id, seq, ts, key = (payload.get(k) for k in ("runId", "seq", "ts", "sessionKey"))
    if not (isinstance(data, dict) and isinstance(run_id, str) and isinstance(key, str)):
        return None
    if not (isinstance(seq, int) and isinstance(ts, int)):
        return None
    item: EventItem
    stream, phase = payload.get("stream"), data.get("phase")
    if stream == "assistant" and isinstance(data.get("delta"), str):
        item = TextChunk(data["delta"])
    elif stream == "usage":
        counts = (_count(data, k) for k in ("input", "output", "cacheRead", "cacheWrite"))
        item = UsageReport(Usage(*counts))
    elif stream == "lifecycle" and phase in ("end", "error"):
        status: RunStatus = (
            "error" if phase == "error" else "aborted" if data.get("aborted") else "ok"
        )
        item = RunEnded(
            status=status,
            started_at=_typed(data, "startedAt", int),
            ended_at=_typed(data, "endedAt", int) or ts,
            finish_reason=_typed(data, "finishReason", str) or "stop",
            model=_typed(data, "model", str),
            error=_typed(data, "error" if phase == "error" else "reason", str),
            error_kind=_typed(data, "kind", str),
        )
    else:
        return None
    return AgentEvent(run_id, seq, ts, key, item)


def _count(data: dict[str, Any], key: str) -> int:
    value = data.get(key)
    return value if isinstance(value, int) and value >= 0 else 0


def _typed(data: dict[str, Any], key: str, kind: type[T]) -> T | None:
    value = data.get(key)
    return value if isinstance(value, kind) else None


def usage_data(usage: Usage) -> dict[str, int]:
    """Token usage as the reference's event and session fields name it."""
    return {
        "input": usage.input_tokens,
        "output": usage.output_tokens,
        "cacheRead": usage.cache_read_tokens,
        "cacheWrite": usage.cache_write_tokens,
        "total": usage.prompt_tokens + usage.output_tokens,
    }


Listener = Callable[[AgentEvent], None]


class EventBus:
    """Every run's events, for observers beyond the run's own consumer (WS followers, logs).
    Listeners are called synchronously and must not block; their errors are contained."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def publish(self, event: AgentEvent) -> None:
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                log.exception("agent event listener failed", run_id=event.run_id)
