"""Commands waiting for an operator's decision.

When `exec` needs approval (moltbot.tools.exec), it calls `Approvals.decide(request)`, which
announces the request to the listeners (the WebSocket control plane sends
`exec.approval.requested` to operator clients) and waits, at most `timeout_seconds`, for
`resolve(id, decision)`: `allow-once`, `allow-always` or `deny`. No answer in time is a deny.
Every request ends with exactly one `exec.approval.resolved` announcement, whether an operator
answered, the time ran out, or the run went away (aborted, timed out) while it waited.

`allow-always` adds the command's resolved binary to an allowlist kept in this process only
(lost on restart; put lasting entries in `tools.exec.allowlist`). A command without one binary
(shell syntax in `full` mode) cannot be allowed always: the answer counts as allow-once.

At most MAX_PENDING requests wait at once; past that a request is denied at once, so a run
cannot pile up unanswered prompts.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from moltbot.logs import get_logger

log = get_logger("moltbot.tools")

Decision = Literal["allow-once", "allow-always", "deny"]
DECISIONS: tuple[Decision, ...] = ("allow-once", "allow-always", "deny")
MAX_PENDING = 64
REQUESTED = "exec.approval.requested"
RESOLVED = "exec.approval.resolved"

Listener = Callable[[str, dict[str, Any]], None]


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class ApprovalRequest:
    command: str
    cwd: str
    agent_id: str
    session_key: str
    run_id: str
    security: str
    ask: str
    reason: str  # why it needs approval: "not on the allowlist", "tools.exec.ask is always"
    resolved_path: str | None = None  # the binary allow-always would add

    def payload(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "cwd": self.cwd,
            "agentId": self.agent_id,
            "sessionKey": self.session_key,
            "runId": self.run_id,
            "security": self.security,
            "ask": self.ask,
            "reason": self.reason,
            "resolvedPath": self.resolved_path,
        }


@dataclass(frozen=True, slots=True)
class Resolution:
    decision: Decision
    by: str  # who decided: a client, "timeout", "run ended", "limit"


@dataclass(slots=True)
class _Pending:
    id: str
    request: ApprovalRequest
    created_at: int
    expires_at: int
    answer: asyncio.Future[Resolution] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def payload(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "request": self.request.payload(),
            "createdAtMs": self.created_at,
            "expiresAtMs": self.expires_at,
        }


class Approvals:
    def __init__(self, timeout_seconds: float, max_pending: int = MAX_PENDING) -> None:
        self.timeout_seconds = timeout_seconds
        self._max_pending = max_pending
        self._pending: dict[str, _Pending] = {}
        self._always: set[str] = set()
        self._listeners: list[Listener] = []

    # -- observers ----------------------------------------------------------------------------

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _publish(self, name: str, payload: dict[str, Any]) -> None:
        for listener in list(self._listeners):
            try:
                listener(name, payload)
            except Exception:
                log.exception("approval listener failed", event=name)

    # -- asking -------------------------------------------------------------------------------

    def allowed_always(self, binary: str) -> bool:
        return binary in self._always

    async def decide(self, request: ApprovalRequest) -> Resolution:
        """Wait for an operator's decision on `request` (bounded); a deny if none comes."""
        if len(self._pending) >= self._max_pending:
            return Resolution("deny", "limit")
        created = now_ms()
        pending = _Pending(
            f"appr_{uuid.uuid4().hex}",
            request,
            created,
            created + int(self.timeout_seconds * 1000),
        )
        self._pending[pending.id] = pending
        self._publish(REQUESTED, pending.payload())
        try:
            async with asyncio.timeout(self.timeout_seconds):
                return await asyncio.shield(pending.answer)
        except TimeoutError:
            return self._settle(pending, Resolution("deny", "timeout"))
        except asyncio.CancelledError:
            self._settle(pending, Resolution("deny", "run ended"))
            raise
        finally:
            self._pending.pop(pending.id, None)

    def resolve(self, approval_id: str, decision: Decision, by: str) -> Resolution | None:
        """An operator's answer; None when the id is unknown or already settled."""
        pending = self._pending.get(approval_id)
        if pending is None or pending.answer.done():
            return None
        binary = pending.request.resolved_path
        if decision == "allow-always" and binary:
            self._always.add(binary)
            log.info("exec binary allowed for this process", binary=binary, by=by)
        return self._settle(pending, Resolution(decision, by))

    def _settle(self, pending: _Pending, resolution: Resolution) -> Resolution:
        if pending.answer.done():
            return pending.answer.result()
        pending.answer.set_result(resolution)
        self._pending.pop(pending.id, None)
        self._publish(
            RESOLVED,
            {
                "id": pending.id,
                "decision": resolution.decision,
                "resolvedBy": resolution.by,
                "ts": now_ms(),
                "runId": pending.request.run_id,
            },
        )
        return resolution

    def pending(self) -> list[dict[str, Any]]:
        """What waits now, oldest first (for `exec.approval.list`)."""
        return [p.payload() for p in self._pending.values() if not p.answer.done()]
