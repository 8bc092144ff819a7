"""`sessions_list` and `sessions_history`: the agent's own sessions, read through the store.

An agent sees only sessions whose owner (the store's agent id) is itself; asking for another
agent's session gets the same "no such session" as a key that does not exist, so nothing about
other agents leaks. Both answers are bounded in entries and characters.
"""

from __future__ import annotations

import time
from typing import Any

from moltbot.agents.store.records import TranscriptMessage
from moltbot.tools.base import Args, ToolContext, ToolError, ToolResult, bounded, schema

LIST_DEFAULT = 20
LIST_MAX = 100
HISTORY_DEFAULT = 20
HISTORY_MAX = 100
MESSAGE_MAX_CHARS = 2000
ANSWER_MAX_CHARS = 50_000


class SessionsListTool:
    name = "sessions_list"
    group = "sessions"
    parallel_safe = True
    description = (
        "List this agent's sessions, most recently updated first: key, last update, turns."
    )
    parameters = schema(
        {
            "limit": {"type": "integer", "minimum": 1, "maximum": LIST_MAX},
            "search": {"type": "string", "description": "part of the session key"},
        }
    )

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        a = Args(self.name, args)
        limit = a.integer("limit", default=LIST_DEFAULT, minimum=1, maximum=LIST_MAX)
        search = a.string("search") or None
        sessions, total = await ctx.store.list(
            agent_id=ctx.agent_id, limit=limit or LIST_DEFAULT, search=search
        )
        if not sessions:
            return ToolResult.success("no sessions", "sessions_list: none")
        lines = [
            f"{s.key}  updated {_when(s.updated_at)}  turns {s.turns}"
            + ("  (this session)" if s.key == ctx.session_key else "")
            for s in sessions
        ]
        if total > len(sessions):
            lines.append(f"[{total - len(sessions)} more not shown]")
        return ToolResult.success("\n".join(lines), f"sessions_list: {total} sessions")


class SessionsHistoryTool:
    name = "sessions_history"
    group = "sessions"
    parallel_safe = True
    description = "Read the last messages of one of this agent's sessions."
    parameters = schema(
        {
            "sessionKey": {"type": "string", "description": "a key from sessions_list"},
            "limit": {"type": "integer", "minimum": 1, "maximum": HISTORY_MAX},
        },
        ("sessionKey",),
    )

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        a = Args(self.name, args)
        key = a.string("sessionKey", required=True).strip()
        limit = a.integer("limit", default=HISTORY_DEFAULT, minimum=1, maximum=HISTORY_MAX)
        info = await ctx.store.get(key) if key else None
        if info is None or info.agent_id != ctx.agent_id:
            raise ToolError(f"no session {key!r} of this agent (see sessions_list)")
        messages = await ctx.store.messages(key, limit or HISTORY_DEFAULT)
        text = "\n\n".join(_message_line(m) for m in messages) or "(no messages)"
        return ToolResult.success(
            bounded(text, ANSWER_MAX_CHARS), f"sessions_history {key}: {len(messages)} messages"
        )


def _message_line(stored: TranscriptMessage) -> str:
    message = stored.message
    if message.role == "tool":
        head = f"[{_when(stored.ts)}] tool result ({message.tool_call_id})"
    else:
        head = f"[{_when(stored.ts)}] {message.role}"
    if stored.status != "ok":
        head += f" ({stored.status})"
    body = bounded(message.text, MESSAGE_MAX_CHARS)
    calls = "".join(f"\n  -> {c.name}({c.arguments[:200]})" for c in message.tool_calls)
    return f"{head}: {body}{calls}"


def _when(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ms / 1000))
