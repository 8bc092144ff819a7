"""Runs started over WS: starting one, consuming it for as long as it lasts, its outcome."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from moltbot.agents.events import usage_data
from moltbot.agents.prompt import with_timestamp_prefix
from moltbot.agents.runtime import AgentRuntime, InvalidTurn, Run, TurnRequest
from moltbot.agents.session_keys import is_reserved
from moltbot.agents.store.records import SessionStoreError
from moltbot.content import ImagePart, Message, Part, TextPart
from moltbot.gateway.ws.budget import encoded_size, fit_text
from moltbot.gateway.ws.call import Call
from moltbot.gateway.ws.connection import Connection
from moltbot.gateway.ws.params import invalid_params
from moltbot.gateway.ws.protocol import CLOSE_POLICY_VIOLATION, RpcError, unavailable
from moltbot.gateway.ws.views import split_model_ref
from moltbot.logs import get_logger

log = get_logger("moltbot.ws")

Outcome = tuple[bool, dict[str, Any], RpcError | None]


def stamped(zone: ZoneInfo, message: str) -> str:
    """WS turns carry the user's local time in front of the message (agent-runtime §6.3).
    `zone` is the hub's, resolved once from `agents.defaults.userTimezone`."""
    return with_timestamp_prefix(message, zone)


def user_message(text: str, images: tuple[ImagePart, ...] = ()) -> Message:
    parts: tuple[Part, ...] = (TextPart(text),) if text else ()
    return Message("user", parts + images)


def check_writable(method: str, session_key: str) -> None:
    if is_reserved(session_key):
        raise invalid_params(method, f'session key "{session_key}" is in a reserved namespace')


def start_run(call: Call, request: TurnRequest, *, follow: bool = True) -> Run:
    """Start a turn; with `follow`, its `agent` events go to the calling connection. The
    caller hands the run to a hub task, so it goes on (and is saved) if this socket closes."""
    assert request.run_id is not None
    if follow:  # before the run exists, so not even its first event is missed
        call.hub.routes.add(call.conn, "run", request.run_id)
    try:
        return call.runtime.start(request)
    except InvalidTurn as exc:
        if follow:
            call.hub.routes.remove(call.conn, "run", request.run_id)
        raise invalid_params(call.method, str(exc)) from None


async def drain(run: Run, conn: Connection | None = None) -> None:
    """Iterate the run to its end: stopping early would abort it. While `conn` (the socket
    that started it) is backed up, wait for it to read: a slow client holds its run back,
    and the run its upstream. One that reads nothing for the stall limit is disconnected
    and its run aborted."""
    async for _ in run:
        if conn is None or not conn.backed_up:
            continue
        if not await conn.wait_for_room(run.stall_seconds):
            log.warning("closing slow consumer", conn=conn.id, run_id=run.id)
            conn.close(CLOSE_POLICY_VIOLATION, "slow consumer", flush=False)
            run.abort("slow consumer: the client read nothing in time")


def _payload(text: str, room: int) -> dict[str, Any]:
    """The reply as a result payload, cut (and marked) if it would not fit in one frame."""
    if len(text) <= room // 6:  # 6 bytes a character at most: it fits
        return {"text": text, "mediaUrl": None}
    frame: dict[str, Any] = {"text": "", "mediaUrl": None, "truncated": True}
    shown = fit_text(text, room - encoded_size(frame) + 2)  # + the empty string's quotes
    if len(shown) == len(text):
        return {"text": text, "mediaUrl": None}
    frame["text"] = shown
    return frame


async def agent_outcome(runtime: AgentRuntime, run: Run, room: int) -> Outcome:
    """The `agent` method's second response for a finished run."""
    if run.status == "error":
        summary = run.error or "agent run failed"
        return False, {"runId": run.id, "status": "error", "summary": summary}, unavailable(summary)
    provider, model = split_model_ref(run.model_ref)
    agent_meta: dict[str, Any] = {
        "sessionId": await _session_id(runtime, run.session_key),
        "provider": provider,
        "model": model,
    }
    if run.usage is not None:
        agent_meta["usage"] = usage_data(run.usage)
    duration = (run.ended_at or 0) - (run.started_at or run.ended_at or 0)
    result = {
        "payloads": [_payload(run.text, room)] if run.text else [],
        "meta": {
            "durationMs": max(0, duration),
            "agentMeta": agent_meta,
            "aborted": run.status == "aborted",
        },
    }
    if run.status == "aborted":
        result["meta"]["abortReason"] = run.error or "aborted"
    payload = {"runId": run.id, "status": "ok", "summary": "completed", "result": result}
    return True, payload, None


async def _session_id(runtime: AgentRuntime, key: str) -> str | None:
    try:
        info = await runtime.store.get(key)
    except SessionStoreError as exc:
        log.warning("could not read session for a run result", error=str(exc))
        return None
    return info.session_id if info else None


def wait_result(run: Run) -> dict[str, Any]:
    """`agent.wait`'s answer for a finished run. An aborted run did not complete, so it is
    reported as an error (the reference reports it as ok)."""
    result = run.snapshot()
    if run.status == "aborted":
        result.update(status="error", error=f"run aborted ({run.error or 'aborted'})")
        result["aborted"] = True
    return result


def ended_result(notice: dict[str, Any]) -> dict[str, Any]:
    """`wait_result` for a run known only by its "turn" notice (it ran in another process)."""
    result: dict[str, Any] = {"runId": notice["run"], "status": notice["status"]}
    for field in ("startedAt", "endedAt"):
        if notice.get(field) is not None:
            result[field] = notice[field]
    if notice.get("error"):
        result["error"] = notice["error"]
    if notice["status"] == "aborted":
        result.update(status="error", error=f"run aborted ({notice.get('error') or 'aborted'})")
        result["aborted"] = True
    return result
