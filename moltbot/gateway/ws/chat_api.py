"""chat.send, chat.history, chat.abort: the session-centred API chat UIs use.

A connection that sends to or reads a session receives that session's `chat` events from then
on, whatever started the run (WS `agent`, `chat.send`, or HTTP `/v1/chat/completions`).
"""

from __future__ import annotations

from typing import Any

from moltbot.agents.runtime import Run, TurnRequest
from moltbot.gateway.ws.attachments import parse_attachments
from moltbot.gateway.ws.budget import encoded_size, fit_text, keep_last
from moltbot.gateway.ws.call import Call
from moltbot.gateway.ws.connection import Connection
from moltbot.gateway.ws.hub import Hub
from moltbot.gateway.ws.params import Params
from moltbot.gateway.ws.protocol import invalid_request, unavailable
from moltbot.gateway.ws.runs import (
    Outcome,
    check_writable,
    drain,
    stamped,
    start_run,
    user_message,
)
from moltbot.gateway.ws.views import transcript_messages

HISTORY_DEFAULT_LIMIT = 200
HISTORY_MAX_LIMIT = 1000
# A message that is one of these (trimmed, any case) stops the session's runs instead.
STOP_WORDS = frozenset({"/stop", "stop", "esc", "abort", "wait", "exit", "interrupt"})


async def chat_send(call: Call, params: Any) -> dict[str, Any] | None:
    p = Params(params)
    raw_key = p.session_key(required=True) or ""
    message = p.string("message", required=True)
    key = p.string("idempotencyKey", required=True, min_length=1) or ""
    attachments = p.array("attachments")
    timeout_ms = p.integer("timeoutMs", minimum=0)
    p.ignored("thinking", "deliver")  # no thinking levels or delivery channels here
    p.finish("chat.send")
    session = call.session_key(raw_key)
    call.hub.subscribe(call.conn, "chat", session)
    text = message or ""
    if text.strip().lower() in STOP_WORDS:
        return abort_runs(call, session, None, reason="stop")
    if not text.strip() and not attachments:
        raise invalid_request("message or attachment required")
    images = parse_attachments("chat.send", attachments)
    if (repeated := _repeat(call, key)) is not None:
        ok, payload, error = repeated
        if ok:
            return payload
        call.respond(False, payload, error)
        return None
    check_writable("chat.send", session)
    request = TurnRequest(
        input=(user_message(stamped(call.hub.timezone, text) if text.strip() else "", images),),
        session_key=session,
        run_id=key,
        # Unlike the reference, timeoutMs bounds the run itself.
        timeout_seconds=timeout_ms / 1000 if timeout_ms else None,
    )
    # `chat` events are what chat.send clients read: no `agent` events on top.
    run = start_run(call, request, follow=False)
    _consume(call.hub, run, call.conn)
    return {"runId": key, "status": "started"}


def _repeat(call: Call, key: str) -> Outcome | None:
    """The answer for an idempotency key seen before, or None for a new one."""
    run = call.runtime.get_run(key)
    if run is not None and not run.done.is_set():
        return True, {"runId": key, "status": "in_flight"}, None
    if run is not None:
        ok, summary = run.status == "ok", run.error or run.status
    elif (cached := call.hub.dedupe.get(f"chat:{key}")) is not None:
        ok, summary = cached.ok, (cached.payload or {}).get("summary", "")
    else:
        return None
    if ok:
        return True, {"runId": key, "status": "ok"}, None
    return False, {"runId": key, "status": "error", "summary": summary}, unavailable(summary)


def _consume(hub: Hub, run: Run, conn: Connection) -> None:
    async def consume() -> None:
        await drain(run, conn)
        payload = {"runId": run.id, "status": "ok" if run.status == "ok" else "error"}
        if run.status != "ok":
            payload["summary"] = run.error or run.status
        hub.dedupe.put(f"chat:{run.id}", run.status == "ok", payload)

    hub.spawn(consume(), name=f"chat run {run.id}")


async def chat_history(call: Call, params: Any) -> dict[str, Any]:
    p = Params(params)
    raw_key = p.session_key(required=True) or ""
    limit = p.integer("limit", minimum=1, maximum=HISTORY_MAX_LIMIT)
    p.finish("chat.history")
    session = call.session_key(raw_key)
    call.hub.subscribe(call.conn, "chat", session)
    store = call.runtime.store
    info = await store.get(session)
    messages = await store.messages(session, limit or HISTORY_DEFAULT_LIMIT) if info else []
    result: dict[str, Any] = {"sessionKey": session, "messages": []}
    if info is not None:
        result["sessionId"] = info.session_id
    # The newest messages that fit in one frame (the reference allows 6 MiB, over its own
    # maxPayload); a newest message too long on its own comes cut.
    room = call.room(result)
    items = transcript_messages(messages)
    shown = keep_last(items, room)
    if items and not shown:
        shown = [_cut_to_fit(items[-1], room)]
    result["messages"] = shown
    return result


def _cut_to_fit(item: dict[str, Any], room: int) -> dict[str, Any]:
    """`item` (a transcript message) as one text block, cut so that `[item]` fits in `room`
    (its image and tool-call blocks left out)."""
    text = "".join(block["text"] for block in item["content"] if block["type"] == "text")
    cut = {**item, "content": [{"type": "text", "text": ""}], "truncated": True}
    # The text may take what the empty shell leaves; fit_text counts its quotes too.
    cut["content"][0]["text"] = fit_text(text, room - encoded_size([cut]) + 2)
    return cut


async def chat_abort(call: Call, params: Any) -> dict[str, Any]:
    p = Params(params)
    raw_key = p.session_key(required=True) or ""
    run_id = p.string("runId", min_length=1)
    p.finish("chat.abort")
    session = call.session_key(raw_key)
    result = abort_runs(call, session, run_id, reason="rpc")
    if not result["aborted"] and call.hub.remote is not None:  # perhaps another process's
        aborted = await call.hub.remote.abort(session, run_id, "rpc")
        result.update(aborted=bool(aborted), runIds=aborted)
    return result


def abort_runs(call: Call, session: str, run_id: str | None, *, reason: str) -> dict[str, Any]:
    """Abort one run of `session`, or all its active runs. Any run counts, not only those
    started by chat.send (the reference can only stop chat.send runs)."""
    if run_id is None:
        runs = call.runtime.active_runs(session)
    else:
        run = call.runtime.get_run(run_id)
        if run is not None and run.session_key != session:
            raise invalid_request("runId does not match sessionKey")
        runs = [run] if run is not None else []
    aborted = [run.id for run in runs if run.abort(reason)]
    return {"ok": True, "aborted": bool(aborted), "runIds": aborted}
