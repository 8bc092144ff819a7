"""Agent events: what a run reports, in order, to whoever consumes it.

One shape serves every transport: HTTP turns `assistant` deltas into SSE chunks, the WS control
plane forwards `payload()` as the `agent` event. `seq` starts at 1 per run and grows by one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from moltbot.logs import get_logger

log = get_logger("moltbot.agents")

Stream = Literal["lifecycle", "assistant", "usage"]


@dataclass(frozen=True, slots=True)
class AgentEvent:
    run_id: str
    seq: int
    stream: Stream
    ts: int  # ms since the epoch
    data: dict[str, Any]
    session_key: str

    @property
    def phase(self) -> str | None:
        """ "start" / "end" / "error" for lifecycle events, else None."""
        return self.data.get("phase") if self.stream == "lifecycle" else None

    @property
    def is_terminal(self) -> bool:
        return self.phase in ("end", "error")

    def payload(self) -> dict[str, Any]:
        """The reference's `agent` event payload."""
        return {
            "runId": self.run_id,
            "seq": self.seq,
            "stream": self.stream,
            "ts": self.ts,
            "data": self.data,
            "sessionKey": self.session_key,
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
