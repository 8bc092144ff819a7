"""agent, agent.wait, agent.follow, agent.unfollow.

`agent` answers twice on one request id (kept for compatibility, protocol deviation §10.3):
first `{runId, status:"accepted", acceptedAt}` at once, then the outcome when the run ends.
A repeated idempotency key never starts a second run: it gets the same two answers for the run
it started the first time.
"""

from __future__ import annotations

from typing import Any

from moltbot.agents.runtime import Run, TurnRequest, now_ms
from moltbot.agents.session_keys import agent_of_key, main_key
from moltbot.config.agents import normalize_agent_id
from moltbot.gateway.ws import shared_runs
from moltbot.gateway.ws.attachments import parse_attachments
from moltbot.gateway.ws.call import Call
from moltbot.gateway.ws.hub import PAYLOAD_HEADROOM
from moltbot.gateway.ws.params import Params, invalid_params
from moltbot.gateway.ws.protocol import RpcError, invalid_request
from moltbot.gateway.ws.remote_runs import RemoteRuns
from moltbot.gateway.ws.runs import (
    agent_outcome,
    check_writable,
    drain,
    ended_result,
    stamped,
    start_run,
    user_message,
    wait_result,
)

DEFAULT_WAIT_MS = 30_000
# Accepted by the schema, without effect here: no delivery channels, thinking levels, lanes,
# labels or explicit transcript ids in this gateway.
IGNORED_AGENT_FIELDS = (
    "to",
    "replyTo",
    "thinking",
    "deliver",
    "channel",
    "replyChannel",
    "accountId",
    "replyAccountId",
    "threadId",
    "groupId",
    "groupChannel",
    "groupSpace",
    "lane",
    "label",
    "spawnedBy",
    "sessionId",
)


async def agent(call: Call, params: Any) -> None:
    p = Params(params)
    message = p.string("message", required=True, min_length=1) or ""
    key = p.string("idempotencyKey", required=True, min_length=1) or ""
    agent_id = p.string("agentId", min_length=1)
    session_key = p.session_key()
    timeout = p.integer("timeout", minimum=0)
    extra = p.string("extraSystemPrompt")
    attachments = p.array("attachments")
    p.ignored(*IGNORED_AGENT_FIELDS)
    p.finish("agent")
    images = parse_attachments("agent", attachments)
    if _replay(call, key):
        return
    agent_id = _known_agent(call, agent_id)
    owner = agent_id or call.runtime.agents.default_id
    session = call.session_key(session_key, owner) if session_key else main_key(owner)
    if agent_id and (key_agent := agent_of_key(session)) not in (None, agent_id):
        raise invalid_params(
            "agent", f'agent "{agent_id}" does not match session key agent "{key_agent}"'
        )
    check_writable("agent", session)
    request = TurnRequest(
        input=(user_message(stamped(call.hub.timezone, message), images),),
        session_key=session,
        agent_id=agent_id,
        run_id=key,
        extra_system_prompt=extra or None,
        timeout_seconds=timeout or None,  # 0: the agent's default
    )
    if (earlier := await shared_runs.claim(call, key, session)) is not None:
        shared_runs.answer_repeat(call, earlier)  # started by another process
        return
    try:
        run = start_run(call, request)
    except RpcError as exc:  # the key is claimed: repeats get this answer too
        await shared_runs.remember(call, key, False, None, exc)
        raise
    accepted = {"runId": key, "status": "accepted", "acceptedAt": now_ms()}
    call.hub.dedupe.put(f"agent:{key}:accepted", True, accepted)
    call.respond(True, accepted)
    _answer_at_end(call, run, consume=True)


def _known_agent(call: Call, agent_id: str | None) -> str | None:
    if agent_id is None:
        return None
    normalized = normalize_agent_id(agent_id)
    if call.runtime.agents.get(normalized) is None:
        raise invalid_params("agent", f'unknown agent id "{agent_id}"')
    return normalized


def _replay(call: Call, key: str) -> bool:
    """Answer a repeated idempotency key from the run (or the cache); False if it is new."""
    hub = call.hub
    run = call.runtime.get_run(key)
    accepted = hub.dedupe.get(f"agent:{key}:accepted")
    final = hub.dedupe.get(f"agent:{key}:final")
    if run is None and final is None:
        return False
    if accepted is not None:
        call.respond(True, accepted.payload)
    else:  # a run started another way (chat.send, HTTP) under the same id
        started = run.started_at if run and run.started_at else now_ms()
        call.respond(True, {"runId": key, "status": "accepted", "acceptedAt": started})
    if run is not None:
        if not run.done.is_set():
            hub.routes.add(call.conn, "run", key)
        _answer_at_end(call, run, consume=False)
    elif final is not None:
        call.conn.send_response(call.request_id, final.ok, final.payload, final.error)
    return True


def _answer_at_end(call: Call, run: Run, consume: bool) -> None:
    hub, conn, request_id = call.hub, call.conn, call.request_id

    async def answer() -> None:
        await (drain(run, conn) if consume else run.wait())
        room = hub.options.max_payload - PAYLOAD_HEADROOM
        ok, payload, error = await agent_outcome(hub.runtime, run, room)
        hub.dedupe.put(f"agent:{run.id}:final", ok, payload, error)
        conn.send_response(request_id, ok, payload, error)
        if consume:  # the run this process claimed: its answer, for repeats anywhere
            await shared_runs.remember(call, run.id, ok, payload, error)

    hub.spawn(answer(), name=f"agent result {run.id}")


async def agent_wait(call: Call, params: Any) -> dict[str, Any]:
    p = Params(params)
    run_id = p.string("runId", required=True, min_length=1) or ""
    timeout_ms = p.integer("timeoutMs", minimum=0)
    p.finish("agent.wait")
    timeout_ms = DEFAULT_WAIT_MS if timeout_ms is None else timeout_ms
    run = call.runtime.get_run(run_id)
    if run is None and call.hub.remote is not None:  # perhaps a run of another process
        ended = await call.hub.remote.wait_end(run_id, timeout_ms / 1000)
        return {"runId": run_id, "status": "timeout"} if ended is None else ended_result(ended)
    if run is None or not run.done.is_set():
        if timeout_ms == 0 or not await call.hub.wait_for_run_end(run_id, timeout_ms / 1000):
            return {"runId": run_id, "status": "timeout"}
        run = call.runtime.get_run(run_id)
    if run is None:  # ended and already forgotten (only with a flood of runs)
        return {"runId": run_id, "status": "timeout"}
    return wait_result(run)


async def agent_follow(call: Call, params: Any) -> dict[str, Any]:
    """Receive the `agent` events of one run, or of every run on a session, on this socket."""
    run_id, session_key = _follow_target(call, params)
    if run_id is not None:
        run = call.runtime.get_run(run_id)
        if run is None and call.hub.remote is not None:  # perhaps another process's run
            return await _follow_remote(call, call.hub.remote, run_id)
        if run is None:
            raise invalid_request(f'unknown run id "{run_id}"')
        following = not run.done.is_set()
        if following:
            call.hub.routes.add(call.conn, "run", run_id)
        return {"ok": True, "runId": run_id, "following": following, "status": run.status}
    assert session_key is not None
    call.hub.subscribe(call.conn, "session", session_key)  # its runs elsewhere too
    active = [r.id for r in call.runtime.active_runs(session_key)]
    return {"ok": True, "sessionKey": session_key, "following": True, "activeRunIds": active}


async def _follow_remote(call: Call, remote: RemoteRuns, run_id: str) -> dict[str, Any]:
    call.hub.routes.add(call.conn, "run", run_id)  # first: no relayed event goes astray
    status = await remote.follow(run_id)
    if status is None:
        call.hub.routes.remove(call.conn, "run", run_id)
        raise invalid_request(f'unknown run id "{run_id}"')
    return {"ok": True, "runId": run_id, "following": True, "status": status}


async def agent_unfollow(call: Call, params: Any) -> dict[str, Any]:
    run_id, session_key = _follow_target(call, params, method="agent.unfollow")
    if run_id is not None:
        removed = call.hub.routes.remove(call.conn, "run", run_id)
    else:
        removed = call.hub.routes.remove(call.conn, "session", session_key or "")
    return {"ok": True, "removed": removed}


def _follow_target(
    call: Call, params: Any, method: str = "agent.follow"
) -> tuple[str | None, str | None]:
    p = Params(params)
    run_id = p.string("runId", min_length=1)
    session_key = p.session_key()
    p.finish(method)
    if (run_id is None) == (session_key is None):
        raise invalid_params(method, "pass exactly one of runId or sessionKey")
    return run_id, (call.session_key(session_key) if session_key is not None else None)
