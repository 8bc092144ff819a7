"""sessions.list, sessions.preview, sessions.reset, sessions.delete on the session store."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from moltbot.agents.runtime import now_ms
from moltbot.agents.session_keys import MAX_SESSION_KEY_CHARS, agent_of_key, main_key
from moltbot.agents.store.records import SessionInfo, TranscriptMessage
from moltbot.gateway.ws.budget import keep_first, keep_last
from moltbot.gateway.ws.call import Call
from moltbot.gateway.ws.params import Params, invalid_params
from moltbot.gateway.ws.protocol import invalid_request, unavailable
from moltbot.gateway.ws.views import (
    HIDDEN_KEYS,
    default_model,
    session_row,
    shown_key,
    strip_envelope,
)

LIST_DEFAULT_LIMIT = 200
LIST_MAX_LIMIT = 1000
PREVIEW_MAX_KEYS = 64
PREVIEW_DEFAULT_ITEMS, PREVIEW_MAX_ITEMS = 12, 50
PREVIEW_DEFAULT_CHARS, PREVIEW_MIN_CHARS, PREVIEW_MAX_CHARS = 240, 20, 2000
TITLE_MAX_CHARS = 60
# How far back a derived title looks for the first user message.
TITLE_SCAN_MESSAGES = 1000
# A window longer than any store has existed: larger values mean the same, and
# minutes × 60 000 must stay within SQLite's 64-bit integers.
ACTIVE_MINUTES_MAX = 100 * 365 * 24 * 60
# sessions.delete waits this long for the session's runs to stop after aborting them.
DELETE_WAIT_SECONDS = 15.0
SESSION_ID_MAX_CHARS = 64  # ours are UUIDs


async def sessions_list(call: Call, params: Any) -> dict[str, Any]:
    p = Params(params)
    limit = p.integer("limit", minimum=1)
    active_minutes = p.integer("activeMinutes", minimum=1)
    include_global = p.boolean("includeGlobal")
    include_unknown = p.boolean("includeUnknown")
    derived_titles = p.boolean("includeDerivedTitles")
    last_message = p.boolean("includeLastMessage")
    label = p.string("label", min_length=1, max_length=64)
    spawned_by = p.string("spawnedBy")
    agent_id = p.string("agentId")
    search = p.string("search")
    p.finish("sessions.list")
    if active_minutes is not None:
        active_minutes = min(active_minutes, ACTIVE_MINUTES_MAX)
    store = call.runtime.store
    wanted = min(limit or LIST_DEFAULT_LIMIT, LIST_MAX_LIMIT)
    # Two extra rows in case `global` / `unknown` are among them and get filtered out.
    infos, _ = await store.list(
        agent_id=agent_id,
        limit=wanted + 2,
        search=(search or "").strip() or None,
        active_minutes=active_minutes,
    )
    shown = {"global": include_global, "unknown": include_unknown}
    hidden = {key for key in HIDDEN_KEYS if not shown[key]}
    infos = [i for i in infos if i.key not in hidden]
    # We store no labels and no spawn parents: filtering on them matches nothing.
    if label is not None or spawned_by is not None:
        infos = []
    infos = infos[:wanted]
    rows = [session_row(info, call.config) for info in infos]
    if derived_titles:
        for row, info in zip(rows, infos, strict=True):
            row["derivedTitle"] = await _derived_title(call, info)
    if last_message and infos:
        previews = await store.preview([i.key for i in infos], limit=2)
        for row, info in zip(rows, infos, strict=True):
            if preview := _last_text(previews.get(info.key, [])):
                row["lastMessagePreview"] = preview
    result = {
        "ts": now_ms(),
        "path": call.config.session_store_location,
        "count": len(rows),
        "defaults": default_model(call.config, call.runtime.providers.default_ref()),
        "sessions": [],
        "truncated": True,  # measured with the flag, kept only if rows had to go
    }
    shown = keep_first(rows, call.room(result))
    result.update(count=len(shown), sessions=shown)
    if len(shown) == len(rows):
        del result["truncated"]
    return result


async def _derived_title(call: Call, info: SessionInfo) -> str:
    messages = await call.runtime.store.messages(info.key, TITLE_SCAN_MESSAGES)
    first_user = next((m.content for m in messages if m.role == "user"), "")
    text = " ".join(strip_envelope(first_user).split())
    if text:
        return _clip_words(text, TITLE_MAX_CHARS)
    day = datetime.fromtimestamp(info.created_at / 1000, UTC).strftime("%Y-%m-%d")
    return f"{info.session_id[:8]} ({day})"


def _clip_words(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    if " " in cut:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip() + "…"


def _last_text(messages: list[TranscriptMessage]) -> str | None:
    for message in reversed(messages):
        if message.content.strip():
            return _clip(" ".join(_display_text(message).split()), PREVIEW_DEFAULT_CHARS)
    return None


def _display_text(message: TranscriptMessage) -> str:
    return strip_envelope(message.content) if message.role == "user" else message.content


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(0, limit - 3)] + "..."


async def sessions_preview(call: Call, params: Any) -> dict[str, Any]:
    p = Params(params)
    keys = p.strings("keys", required=True, min_items=1, max_length=MAX_SESSION_KEY_CHARS)
    limit = p.integer("limit")
    max_chars = p.integer("maxChars", minimum=PREVIEW_MIN_CHARS)
    p.finish("sessions.preview")
    keys = (keys or [])[:PREVIEW_MAX_KEYS]
    items = max(1, min(limit or PREVIEW_DEFAULT_ITEMS, PREVIEW_MAX_ITEMS))
    chars = min(max_chars or PREVIEW_DEFAULT_CHARS, PREVIEW_MAX_CHARS)
    canonical = [call.session_key(k) for k in keys]
    found = await call.runtime.store.preview(canonical, limit=items)
    previews, all_items = [], []
    for asked, key in zip(keys, canonical, strict=True):
        messages = found.get(key)
        status = "missing" if messages is None else ("ok" if messages else "empty")
        previews.append({"key": asked, "status": status, "items": []})
        all_items.append([_preview_item(m, chars) for m in messages or []])
    result = {"ts": now_ms(), "previews": previews}
    # Each preview gets an equal share of the frame and keeps its newest items that fit.
    share = call.room(result) // max(1, len(previews))
    for preview, items in zip(previews, all_items, strict=True):
        preview["items"] = keep_last(items, share)
    return result


def _preview_item(message: TranscriptMessage, chars: int) -> dict[str, str]:
    return {"role": message.role, "text": _clip(_display_text(message), chars)}


async def sessions_reset(call: Call, params: Any) -> dict[str, Any]:
    p = Params(params)
    raw_key = p.session_key("key", required=True)
    p.finish("sessions.reset")
    key = call.session_key(raw_key or "")
    store = call.runtime.store
    info = await store.reset(key)
    if info is None:  # no such session yet: it starts fresh, as after a reset
        owner = agent_of_key(key) or call.runtime.agents.default_id
        info = await store.ensure(key, owner)
    return {"ok": True, "key": key, "entry": session_row(info, call.config)}


async def sessions_delete(call: Call, params: Any) -> dict[str, Any]:
    p = Params(params)
    raw_key = p.session_key("key")
    # Our addition: a session whose key is too long to send (one written before keys had a
    # cap, listed with `keyTruncated`) is named by its sessionId instead.
    session_id = p.string("sessionId", min_length=1, max_length=SESSION_ID_MAX_CHARS)
    p.boolean("deleteTranscript")  # transcripts live in the store row: they always go with it
    if raw_key is None and session_id is None:
        p.string("key", required=True)  # the reference's "must have required property 'key'"
    p.finish("sessions.delete")
    key = await _delete_target(call, raw_key, session_id)
    main = main_key(call.runtime.agents.default_id)
    if key == main:
        raise invalid_request(f"Cannot delete the main session ({main}).")
    await _stop_runs(call, key)
    deleted = await call.runtime.store.delete(key)
    return {"ok": True, "key": shown_key(key), "deleted": deleted, "archived": []}


async def _delete_target(call: Call, raw_key: str | None, session_id: str | None) -> str:
    if raw_key is not None and session_id is not None:
        raise invalid_params("sessions.delete", "pass exactly one of key or sessionId")
    if raw_key is not None:
        return call.session_key(raw_key)
    key = await call.runtime.store.key_of(session_id or "")
    if key is None:
        raise invalid_request(f"no session has sessionId {session_id}")
    return key


async def _stop_runs(call: Call, key: str) -> None:
    """A run still going would write the session back when it ends: stop it first."""
    runs = call.runtime.active_runs(key)
    for run in runs:
        run.abort("session deleted")
    if not runs:
        return
    try:
        async with asyncio.timeout(DELETE_WAIT_SECONDS):
            await asyncio.gather(*(run.wait() for run in runs))
    except TimeoutError:
        raise unavailable(f"Session {key} is still active; try again in a moment.") from None
