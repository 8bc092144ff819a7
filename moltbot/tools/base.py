"""The tool protocol: what an agent tool declares, what it is given, what it returns.

A tool has a name, a description and a JSON-schema for its arguments (what the model sees),
a group (for the policy) and a parallel-safe flag (calls that only read may run side by side).
`run(args, ctx)` gets the parsed arguments and the run's context and returns a `ToolResult`.
A tool reports a failure the model should see by raising `ToolError` (or returning ok=False);
the tool loop turns that, and any unexpected exception, into an error result: a tool never
fails the run. Cancellation (an aborted or timed-out run) is the one thing that propagates.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from moltbot.agents.store.protocol import SessionStore
    from moltbot.tools.approvals import Approvals

# What one result may put in front of the model, and what its summary (events, logs) may be.
MAX_CONTENT_CHARS = 200_000
MAX_SUMMARY_CHARS = 500


class ToolError(Exception):
    """A failure to tell the model (a missing file, a refused path, a bad argument)."""


@dataclass(frozen=True, slots=True)
class ToolResult:
    ok: bool
    content: str  # what the model reads
    summary: str  # one short line for the `tool` event and the logs

    @classmethod
    def of(cls, ok: bool, content: str, summary: str) -> ToolResult:
        """A result with its content and summary cut to their bounds."""
        return cls(ok, bounded(content, MAX_CONTENT_CHARS), one_line(summary))

    @classmethod
    def success(cls, content: str, summary: str | None = None) -> ToolResult:
        return cls.of(True, content, summary or content)

    @classmethod
    def failure(cls, message: str) -> ToolResult:
        return cls.of(False, f"error: {message}", message)


@dataclass(frozen=True, slots=True)
class ToolContext:
    """What a tool may know about the run calling it."""

    agent_id: str
    workspace: Path
    session_key: str
    run_id: str
    store: SessionStore
    approvals: Approvals


class AgentTool(Protocol):
    name: str
    description: str
    parameters: dict[str, Any]  # JSON schema of the arguments object
    group: str  # a policy group: "fs", "runtime", "web", "sessions"
    parallel_safe: bool

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult: ...


def bounded(text: str, limit: int, what: str = "characters") -> str:
    """`text` cut to `limit` characters, saying so at the end."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\n[truncated: {len(text) - limit} more {what} not shown]"


def one_line(text: str, limit: int = MAX_SUMMARY_CHARS) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


class Args:
    """A tool's arguments read field by field; a wrong one is a ToolError naming it."""

    def __init__(self, tool: str, data: Mapping[str, Any]) -> None:
        self._tool = tool
        self._data = data

    def string(self, name: str, *, required: bool = False, default: str | None = None) -> str:
        value = self._data.get(name)
        if value is None:
            if required:
                raise ToolError(f"{self._tool}: missing required argument {name!r}")
            return default or ""
        if not isinstance(value, str):
            raise ToolError(f"{self._tool}: argument {name!r} must be a string")
        return value

    def integer(
        self, name: str, *, default: int | None = None, minimum: int = 0, maximum: int | None = None
    ) -> int | None:
        value = self._data.get(name)
        if value is None:
            return default
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ToolError(f"{self._tool}: argument {name!r} must be an integer")
        if value < minimum or (maximum is not None and value > maximum):
            top = f" and at most {maximum}" if maximum is not None else ""
            raise ToolError(f"{self._tool}: argument {name!r} must be at least {minimum}{top}")
        return value

    def number(self, name: str, *, default: float | None = None) -> float | None:
        value = self._data.get(name)
        if value is None:
            return default
        if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
            raise ToolError(f"{self._tool}: argument {name!r} must be a number above 0")
        return float(value)


def schema(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    """A JSON-schema object for a tool's arguments."""
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }
