"""One turn in flight: what was asked (`TurnRequest`), its reply so far (`Answer`), and its
state and events (`Run`).

The runtime executes a run in its own task and puts its events into the run's buffer; the one
consumer iterates them. The buffer is bounded: when the consumer falls behind (a client that
reads slowly), the run task waits, stops reading from the upstream, and TCP pushes back to the
provider. A consumer stuck for longer than the stall limit gets its run aborted. Stopping the
iteration early aborts the run too.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from moltbot.agents.directory import Agent
from moltbot.agents.events import AgentEvent, RunStatus, ToolCallChunk
from moltbot.content import NO_TOOLS, Message, TextPart, ToolCall, ToolSet, user_text
from moltbot.providers.base import SamplingParams, Usage

# What a run may hold for its consumer: the bytes of text in events not yet taken.
RUN_BUFFER_BYTES = 64 * 1024
EVENT_OVERHEAD_BYTES = 64  # counted per event besides its text
# A consumer that takes nothing for this long is stuck: its run is aborted.
CONSUMER_STALL_SECONDS = 30.0
# Bounds on one reply, whatever the model sends.
MAX_ANSWER_CHARS = 4_000_000
MAX_TOOL_CALLS = 128
MAX_TOOL_ARGUMENT_CHARS = 1_000_000  # all calls' arguments together


@dataclass(frozen=True, slots=True)
class TurnRequest:
    input: tuple[Message, ...]  # what this turn adds: a user message, or tool results; stored
    session_key: str
    agent_id: str | None = None  # None: the agent named by the session key, else the default
    run_id: str | None = None
    extra_system_prompt: str | None = None
    # Earlier messages that came with the request (an OpenAI client sends the whole chat):
    # given to the model before the input, never stored.
    context: tuple[Message, ...] = ()
    tools: ToolSet = NO_TOOLS  # the client's tools: a call to one ends the turn
    # "provider/model" for this turn alone, instead of the agent's primary and fallbacks; it
    # must be one of those (or the default model when the agent names none).
    model_ref: str | None = None
    sampling: SamplingParams = field(default_factory=SamplingParams)
    timeout_seconds: float | None = None
    # The session exists for this turn alone (a stateless HTTP request): there is no history
    # to read, and nothing to keep, since no one can ever continue it.
    ephemeral: bool = False
    # Keep the finished run findable by id (agent.wait, idempotent replays) for a while. HTTP
    # runs are never looked up again, and must not push the ones that are out of that window.
    keep_after_end: bool = True

    @classmethod
    def text(cls, message: str, session_key: str, **fields: Any) -> TurnRequest:
        """A turn whose input is one user text message."""
        return cls(input=(user_text(message),), session_key=session_key, **fields)


class SlowConsumer(Exception):
    """The run's consumer took nothing for CONSUMER_STALL_SECONDS."""


class AnswerTooLarge(Exception):
    """The model's reply went past one of the bounds above."""


@dataclass(slots=True)
class _CallParts:
    id: str
    name: str
    arguments: list[str]


class Answer:
    """The assistant's reply as it streams in: text fragments and tool calls by index, kept
    for the store and for answers that are sent whole. Joined once, at the end."""

    def __init__(self) -> None:
        self._text: list[str] = []
        self._chars = 0
        self._argument_chars = 0
        self._calls: dict[int, _CallParts] = {}

    def add_text(self, text: str) -> None:
        self._chars += len(text)
        if self._chars > MAX_ANSWER_CHARS:
            raise AnswerTooLarge(f"the reply is longer than {MAX_ANSWER_CHARS} characters")
        self._text.append(text)

    def add_tool_call(
        self, index: int, call_id: str | None, name: str | None, arguments: str
    ) -> ToolCallChunk:
        """Take a fragment; the chunk to relay has the call's id filled in when it opens (some
        servers send none: the gateway names it then)."""
        parts = self._calls.get(index)
        opened = parts is None
        if parts is None:
            if len(self._calls) >= MAX_TOOL_CALLS:
                raise AnswerTooLarge(f"the reply has more than {MAX_TOOL_CALLS} tool calls")
            parts = _CallParts(call_id or f"call_{uuid.uuid4().hex[:24]}", name or "", [])
            self._calls[index] = parts
        elif name and not parts.name:
            parts.name = name
        self._argument_chars += len(arguments)
        if self._argument_chars > MAX_TOOL_ARGUMENT_CHARS:
            raise AnswerTooLarge("the reply's tool-call arguments are too long")
        if arguments:
            parts.arguments.append(arguments)
        return ToolCallChunk(index, parts.id if opened else None, name, arguments)

    @property
    def text(self) -> str:
        return "".join(self._text)

    @property
    def tool_calls(self) -> tuple[ToolCall, ...]:
        return tuple(
            ToolCall(c.id, c.name, "".join(c.arguments) or "{}")
            for _, c in sorted(self._calls.items())
        )

    def message(self) -> Message:
        text = self.text
        return Message("assistant", (TextPart(text),) if text else (), self.tool_calls)


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
    answer: Answer = field(default_factory=Answer)  # what the client sees: all rounds' text
    # What the turn adds to the session: the request's input, less what it already holds.
    input: tuple[Message, ...] = ()
    # The messages the turn produced, in order: each model answer (with its tool calls) and
    # the results of the agent's own tools (moltbot.agents.tool_loop). Stored after `input`.
    steps: list[Message] = field(default_factory=list)
    usage: Usage | None = None
    finish_reason: str = "stop"
    error: str | None = None
    error_kind: str | None = None
    seq: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)
    stall_seconds: float = CONSUMER_STALL_SECONDS
    _pending: deque[AgentEvent] = field(default_factory=deque)
    _buffered: int = 0  # bytes of the events in _pending (event_size)
    _wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    _taken: asyncio.Event = field(default_factory=asyncio.Event)
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
                self._buffered -= event_size(event)
                self._taken.set()
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

    @property
    def text(self) -> str:
        """The reply's text so far."""
        return self.answer.text

    @property
    def has_pending(self) -> bool:
        """Events are waiting for the consumer now: it may take them before writing out."""
        return bool(self._pending)

    @property
    def buffered_bytes(self) -> int:
        """What the run holds for its consumer now (never much above RUN_BUFFER_BYTES)."""
        return self._buffered

    def _push(self, event: AgentEvent) -> None:
        """Queue an event without waiting (start, usage, end: a few per run)."""
        self._pending.append(event)
        self._buffered += event_size(event)
        self._wakeup.set()

    async def _put(self, event: AgentEvent) -> None:
        """Queue a delta; first wait while the consumer has a full buffer to take. Raises
        SlowConsumer when it takes nothing for `stall_seconds`."""
        while self._buffered >= RUN_BUFFER_BYTES:
            self._taken.clear()
            try:
                async with asyncio.timeout(self.stall_seconds):
                    await self._taken.wait()
            except TimeoutError:
                raise SlowConsumer(
                    f"the client took no data for {self.stall_seconds:g} s"
                ) from None
        self._push(event)

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


def event_size(event: AgentEvent) -> int:
    item = event.item
    text = (
        getattr(item, "text", None)
        or getattr(item, "arguments", None)
        or getattr(item, "summary", None)
        or ""
    )
    return EVENT_OVERHEAD_BYTES + len(text)
