"""One turn in flight: what was asked (`TurnRequest`), and its state and events (`Run`).

The runtime executes a run in its own task and pushes its events; the one consumer iterates
them. Stopping the iteration early aborts the run.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

from moltbot.agents.directory import Agent
from moltbot.agents.events import AgentEvent
from moltbot.providers.base import SamplingParams, Usage

RunStatus = Literal["queued", "running", "ok", "error", "aborted"]


@dataclass(frozen=True, slots=True)
class TurnRequest:
    message: str
    session_key: str
    agent_id: str | None = None  # None: the agent named by the session key, else the default
    run_id: str | None = None
    extra_system_prompt: str | None = None
    sampling: SamplingParams = field(default_factory=SamplingParams)
    timeout_seconds: float | None = None
    # The session exists for this turn alone (a stateless HTTP request): there is no history
    # to read, and nothing to keep, since no one can ever continue it.
    ephemeral: bool = False
    # Keep the finished run findable by id (agent.wait, idempotent replays) for a while. HTTP
    # runs are never looked up again, and must not push the ones that are out of that window.
    keep_after_end: bool = True


def now_ms() -> int:
    return int(time.time() * 1000)


class IdleTicker:
    """Sets `wakeup` after `interval` seconds without activity. One timer per idle period,
    not one per wait: a stream's every chunk would otherwise arm and cancel a timer."""

    def __init__(self, interval: float, wakeup: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._interval = interval
        self._wakeup = wakeup
        self._last = self._loop.time()
        self._due = False
        self._timer = self._loop.call_at(self._last + interval, self._fire)

    def activity(self) -> None:
        self._last = self._loop.time()

    def take(self) -> bool:
        """Whether a tick is due (and consume it)."""
        due, self._due = self._due, False
        return due

    def stop(self) -> None:
        self._timer.cancel()

    def _fire(self) -> None:
        now = self._loop.time()
        if now - self._last >= self._interval:
            self._due, self._last = True, now
            self._wakeup.set()
        self._timer = self._loop.call_at(self._last + self._interval, self._fire)


@dataclass(eq=False)
class Run:
    """One turn: its state, and its events for the one consumer that iterates it."""

    id: str
    session_key: str
    agent: Agent
    request: TurnRequest
    status: RunStatus = "queued"
    started_at: int | None = None
    ended_at: int | None = None
    model_ref: str | None = None
    text: str = ""
    usage: Usage | None = None
    finish_reason: str = "stop"
    error: str | None = None
    error_kind: str | None = None
    seq: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)
    _pending: deque[AgentEvent] = field(default_factory=deque)
    _wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None
    _abort_reason: str | None = None
    _finishing: bool = False

    def __aiter__(self) -> AsyncIterator[AgentEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[AgentEvent]:
        async for event in self.events():
            if event is not None:
                yield event

    async def events(self, idle_timeout: float | None = None) -> AsyncIterator[AgentEvent | None]:
        """The run's events up to and including the terminal one; `None` after every
        `idle_timeout` seconds without one (for keep-alives). Stopping early aborts the run."""
        ticker = IdleTicker(idle_timeout, self._wakeup) if idle_timeout else None
        try:
            while True:
                while not self._pending:
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    if ticker is not None and ticker.take():
                        yield None
                event = self._pending.popleft()
                if ticker is not None:
                    ticker.activity()
                yield event
                if event.is_terminal:
                    return
        finally:
            if ticker is not None:
                ticker.stop()
            if not self.done.is_set():
                self.abort("client disconnected")

    def _push(self, event: AgentEvent) -> None:
        self._pending.append(event)
        self._wakeup.set()

    def abort(self, reason: str = "aborted") -> bool:
        """Stop the run (queued or running). False if it had already finished."""
        if self._finishing or self.done.is_set() or self._task is None:
            return False  # once it is being recorded, a second abort must not record it twice
        self._abort_reason = self._abort_reason or reason
        self._task.cancel()
        return True

    async def wait(self) -> None:
        await self.done.wait()

    def snapshot(self) -> dict[str, Any]:
        """Status for `agent.wait` and friends."""
        result: dict[str, Any] = {"runId": self.id, "status": self.status}
        if self.started_at is not None:
            result["startedAt"] = self.started_at
        if self.ended_at is not None:
            result["endedAt"] = self.ended_at
        if self.error:
            result["error"] = self.error
        return result
