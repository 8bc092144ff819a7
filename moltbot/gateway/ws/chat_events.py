"""`chat` events: a session-level view of agent runs, for chat UIs.

One `ChatProjector` per gateway turns a run's agent events into chat payloads: throttled
cumulative-text deltas while the assistant streams, then exactly one `final`, `aborted` or
`error`. `seq` mirrors the agent event's seq, so a client can order the two streams together.
The hub feeds it only the events of sessions someone reads; since every assistant event carries
the whole text so far, a run first seen midway still ends with its complete text.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from moltbot.agents.events import AgentEvent

# Deltas at most this often per run; the final always goes out and carries the full text.
DELTA_INTERVAL_SECONDS = 0.150


@dataclass(slots=True)
class _RunView:
    text: str = ""
    last_delta: float | None = None
    usage: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ChatUpdate:
    payload: dict[str, Any]
    droppable: bool  # deltas: a later delta or the final carries the same text


class ChatProjector:
    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        interval: float = DELTA_INTERVAL_SECONDS,
    ) -> None:
        self._clock = clock
        self._interval = interval
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
        view = self._runs.setdefault(event.run_id, _RunView())
        if event.stream == "assistant":
            view.text = event.data.get("text", view.text)
            return self._delta(event, view)
        if event.stream == "usage":
            view.usage = event.data
            return None
        if event.is_terminal:
            del self._runs[event.run_id]
            return ChatUpdate(self._ending(event, view), droppable=False)
        return None

    def _delta(self, event: AgentEvent, view: _RunView) -> ChatUpdate | None:
        now = self._clock()
        if view.last_delta is not None and now - view.last_delta < self._interval:
            return None
        view.last_delta = now
        payload = _base(event, "delta")
        payload["message"] = assistant_message(view.text, event.ts)
        return ChatUpdate(payload, droppable=True)

    @staticmethod
    def _ending(event: AgentEvent, view: _RunView) -> dict[str, Any]:
        data = event.data
        if event.phase == "error":
            payload = _base(event, "error")
            payload["errorMessage"] = data.get("error") or "agent run failed"
        elif data.get("aborted"):
            payload = _base(event, "aborted")
            payload["stopReason"] = data.get("reason") or "aborted"
        else:
            payload = _base(event, "final")
            payload["stopReason"] = data.get("finishReason") or "stop"
        if view.text:
            payload["message"] = assistant_message(view.text, event.ts)
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


def assistant_message(text: str, ts: int) -> dict[str, Any]:
    return {"role": "assistant", "content": [{"type": "text", "text": text}], "timestamp": ts}
