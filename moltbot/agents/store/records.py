"""The store's records, as every backend reads and writes them, and the pure helpers they
share (history window, token totals, LIKE patterns). No I/O here."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from moltbot.content import Message, Role, TextPart, message_from_json
from moltbot.providers.base import Usage

Status = Literal["ok", "error", "aborted"]


class SessionStoreError(Exception):
    """Any failure of the store; the message says which operation failed and why."""


@dataclass(frozen=True, slots=True)
class SessionInfo:
    key: str
    agent_id: str
    session_id: str  # uuid4 of the current transcript; `reset` replaces it
    created_at: int  # ms epoch
    updated_at: int  # ms epoch of creation, the last turn or the last reset
    model: str | None  # last "provider/model" used
    input_tokens: int  # running totals over the current session_id's turns (see record_turn)
    output_tokens: int
    total_tokens: int
    turns: int  # completed ("ok") turns
    aborted_last_run: bool


@dataclass(frozen=True, slots=True)
class TranscriptMessage:
    message: Message
    run_id: str
    ts: int
    status: Status  # the status of the turn the message belongs to
    model: str | None = None  # model, tokens and error are set on a turn's reply only
    input_tokens: int | None = None
    output_tokens: int | None = None
    error: str | None = None

    @property
    def role(self) -> Role:
        return self.message.role

    @property
    def content(self) -> str:
        """The message's text."""
        return self.message.text


@dataclass(frozen=True, slots=True)
class TurnRecord:
    key: str
    agent_id: str
    run_id: str
    # The turn's input (a user message, or tool results and the call they answer), then what
    # the run produced: with the agent's tools, each answer with its calls and their results;
    # the last assistant message is the reply (partial for aborted and failed runs).
    messages: tuple[Message, ...]
    status: Status
    started_at: int
    ended_at: int
    model: str | None = None
    usage: Usage | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ResponseRecord:
    """A response of the Responses endpoint to remember (see `SessionStore.save_response`)."""

    id: str
    session_key: str  # the session its turn was recorded in
    created_at: int  # ms epoch
    expires_at: int  # ms epoch; not found from then on
    body: str | None  # the response object as JSON; None when too large to keep


@dataclass(frozen=True, slots=True)
class StoredResponse:
    id: str
    session_key: str
    created_at: int
    expires_at: int
    body: str | None
    reset_since: bool  # the session was reset since: the response's transcript is gone
    turns_since: int  # "ok" turns the session recorded after it

    @property
    def is_latest(self) -> bool:
        """The session's history still ends with this response's turn."""
        return not self.reset_since and self.turns_since == 0


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def reply_index(messages: Sequence[Message]) -> int:
    """Where a turn's reply is: its last assistant message (the last message if none)."""
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].role == "assistant":
            return index
    return len(messages) - 1


def stored_message(role: Role, content: str, parts: str | None) -> Message:
    if parts is None:
        return Message(role, (TextPart(content),) if content else ())
    return message_from_json(json.loads(parts))


def history_window(messages: list[Message], max_messages: int) -> list[Message]:
    """The last `max_messages` messages, starting at a user message: a window never opens
    in the middle of a turn (a tool result without its call, a reply without its question)."""
    window = messages[-max_messages:] if max_messages > 0 else []
    start = next((i for i, m in enumerate(window) if m.role == "user"), len(window))
    return window[start:]


def like_pattern(search: str) -> str:
    """A LIKE pattern matching `search` anywhere, with its own % and _ taken literally."""
    escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def turn_totals(turn: TurnRecord) -> tuple[int, int, int]:
    """What one turn adds to (input_tokens, output_tokens, total_tokens).

    input is the uncached prompt part, output the completion; total is everything the provider
    processed: input + cache reads + cache writes + output. Failed and aborted runs count too,
    since their tokens were spent."""
    usage = turn.usage
    if usage is None:
        return 0, 0, 0
    return usage.input_tokens, usage.output_tokens, usage.prompt_tokens + usage.output_tokens


def session_values(turn: TurnRecord) -> tuple[Any, ...]:
    """The row of a session first created by `turn`; on conflict only the deltas are used."""
    input_tokens, output_tokens, total_tokens = turn_totals(turn)
    return (
        turn.key, turn.agent_id, str(uuid.uuid4()), turn.started_at, turn.ended_at, turn.model,
        input_tokens, output_tokens, total_tokens,
        1 if turn.status == "ok" else 0,
        turn.status == "aborted",
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class RunRecord:
    """A run id claimed for the WebSocket `agent` method's idempotency across processes."""

    run_id: str
    session_key: str
    accepted_at: int  # ms epoch
    ended_at: int | None = None
    outcome: dict[str, Any] | None = None  # the final answer, once the run has ended
