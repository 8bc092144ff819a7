"""`chat` events: a session-level view of agent runs, for chat UIs.

One `ChatProjector` per gateway turns a run's agent events into chat payloads: throttled
cumulative-text deltas while the assistant streams, then exactly one `final`, `aborted` or
`error`. `seq` mirrors the agent event's seq, so a client can order the two streams together.
The hub feeds it only the events of sessions someone reads. Agent events carry only new text,
so the projector keeps each followed run's text; a run first seen midway starts from the run's
reply so far (`reply_of`), and every ending carries the run's whole reply.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from moltbot.agents.events import AgentEvent, RunEnded, TextChunk, UsageReport, usage_data
from moltbot.content import Message, ToolCall
from moltbot.gateway.ws.budget import encoded_size, fit_text

# The reply of a run so far, by run id (None once the run is gone).
ReplyLookup = Callable[[str], Message | None]

# Deltas at most this often per run; the final always goes out and carries the full text.
DELTA_INTERVAL_SECONDS = 0.150
# Runs in view at once: every local run ends (and is forgotten then), but the end of a run
# relayed from another process may be lost with its notice.
MAX_VIEWS = 10_000


@dataclass(slots=True)
class _RunView:
    parts: list[str] = field(default_factory=list)  # joined only when a delta goes out
    last_delta: float | None = None
    usage: dict[str, Any] | None = None

    @property
    def text(self) -> str:
        if len(self.parts) > 1:
            self.parts[:] = ["".join(self.parts)]
        return self.parts[0] if self.parts else ""


@dataclass(frozen=True, slots=True)
class ChatUpdate:
    payload: dict[str, Any]
    droppable: bool  # deltas: a later delta or the final carries the same text


class ChatProjector:
    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        interval: float = DELTA_INTERVAL_SECONDS,
        reply_of: ReplyLookup = lambda run_id: None,
        text_room: int = 500 * 1024,
    ) -> None:
        self._clock = clock
        self._interval = interval
        self.reply_of = reply_of
        # A chat payload must fit in one frame (maxPayload): longer text is cut, marked
        # `truncated` (HTTP gets a long answer whole).
        self.text_room = text_room
        self._runs: dict[str, _RunView] = {}  # active runs only: removed at their end

    def __len__(self) -> int:
        """How many runs are being followed."""
        return len(self._runs)

    def forget(self, run_id: str) -> None:
        """The run ended (its end may not have been projected: nobody was reading)."""
        self._runs.pop(run_id, None)

    def clear(self) -> None:
        self._runs.clear()

    def project(self, event: AgentEvent) -> ChatUpdate | None:
        view = self._runs.get(event.run_id)
        item = event.item
        if view is None:
            view = self._runs[event.run_id] = _RunView()
            if len(self._runs) > MAX_VIEWS:  # a relayed run whose end never came
                del self._runs[next(iter(self._runs))]
            if isinstance(item, TextChunk) and (reply := self.reply_of(event.run_id)):
                view.parts.append(reply.text)  # first seen midway: the text so far, this one too
                return self._delta(event, view)
        if isinstance(item, TextChunk):
            view.parts.append(item.text)
            return self._delta(event, view)
        if isinstance(item, UsageReport):
            view.usage = usage_data(item.usage)
            return None
        if isinstance(item, RunEnded):
            del self._runs[event.run_id]
            reply = self.reply_of(event.run_id)
            return ChatUpdate(self._ending(event, item, view, reply), droppable=False)
        return None

    def _delta(self, event: AgentEvent, view: _RunView) -> ChatUpdate | None:
        now = self._clock()
        if view.last_delta is not None and now - view.last_delta < self._interval:
            return None
        view.last_delta = now
        payload = _base(event, "delta")
        payload["message"] = assistant_message(view.text, event.ts, room=self.text_room)
        return ChatUpdate(payload, droppable=True)

    def _ending(
        self, event: AgentEvent, end: RunEnded, view: _RunView, reply: Message | None
    ) -> dict[str, Any]:
        if end.status == "error":
            payload = _base(event, "error")
            payload["errorMessage"] = end.error or "agent run failed"
        elif end.status == "aborted":
            payload = _base(event, "aborted")
            payload["stopReason"] = end.error or "aborted"
        else:
            payload = _base(event, "final")
            # The transcript's name for it (chat.history says the same).
            stop = end.finish_reason or "stop"
            payload["stopReason"] = "toolUse" if stop == "tool_calls" else stop
        text = reply.text if reply is not None else view.text
        calls = reply.tool_calls if reply is not None else ()
        if text or calls:
            payload["message"] = assistant_message(text, event.ts, calls, room=self.text_room)
        if view.usage is not None:
            payload["usage"] = view.usage
        return payload


def _base(event: AgentEvent, state: str) -> dict[str, Any]:
    return {
        "runId": event.run_id,
        "sessionKey": event.session_key,
        "seq": event.seq,
        "state": state,
    }


def assistant_message(
    text: str, ts: int, calls: tuple[ToolCall, ...] = (), *, room: int | None = None
) -> dict[str, Any]:
    blocks = [tool_call_block(c) for c in calls]
    message: dict[str, Any] = {"role": "assistant", "content": blocks, "timestamp": ts}
    if text or not calls:
        blocks.insert(0, {"type": "text", "text": text})
    if room is not None and len(text) > room // 6:  # cheap test first: 6 bytes a char at most
        blocks[0]["text"], message["truncated"] = "", True
        shown = fit_text(text, room - encoded_size(message) + 2)  # + the empty string's quotes
        if len(shown) < len(text):
            blocks[0]["text"] = shown
        else:
            blocks[0]["text"] = text
            del message["truncated"]
    return message


def tool_call_block(call: ToolCall) -> dict[str, Any]:
    """The reference's transcript block for a tool call (arguments as the JSON text)."""
    return {"type": "toolCall", "id": call.id, "name": call.name, "arguments": call.arguments}
