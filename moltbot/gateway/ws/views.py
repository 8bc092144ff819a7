"""How our sessions and transcripts look on the wire (sessions.*, status, health, chat.history).

The store keeps less than the reference's session entries (no labels, toggles or delivery
fields); rows carry what we have, with the reference's field names.
"""

from __future__ import annotations

import re
from typing import Any

from moltbot.agents.store.records import SessionInfo, TranscriptMessage
from moltbot.config.model import Config
from moltbot.content import TextPart
from moltbot.gateway.ws.chat_events import tool_call_block
from moltbot.providers.echo import ECHO_MODEL_ID, ECHO_PROVIDER_NAME

# The timestamp envelope WS turns get (`[Sat 2026-01-31 19:55 CET] `), hidden again in history.
_ENVELOPE = re.compile(r"^\[[A-Z][a-z]{2} \d{4}-\d{2}-\d{2} \d{2}:\d{2}[^\]]*\] ")
_STOP_REASONS = {"ok": "stop", "error": "error", "aborted": "aborted"}
HIDDEN_KEYS = ("global", "unknown")
MAIN_KEY = "main"  # the main-session suffix: `agent:<id>:main`
# Longer than any key made since keys have a cap (MAX_SESSION_KEY_CHARS plus `agent:<id>:`).
# A store written before may hold longer ones: they are shown cut, with `keyTruncated`, and
# such a session is deleted by its sessionId.
SHOWN_KEY_MAX_CHARS = 1024


def shown_key(key: str) -> str:
    return key if len(key) <= SHOWN_KEY_MAX_CHARS else key[:SHOWN_KEY_MAX_CHARS] + "…"


def _key_fields(key: str) -> dict[str, Any]:
    if len(key) <= SHOWN_KEY_MAX_CHARS:
        return {"key": key}
    return {"key": shown_key(key), "keyTruncated": True}


def session_kind(key: str) -> str:
    if key in HIDDEN_KEYS:
        return key
    if ":group:" in key or ":channel:" in key:
        return "group"
    return "direct"


def split_model_ref(ref: str | None) -> tuple[str | None, str | None]:
    """ "provider/model" → (provider, model); (None, None) when unknown."""
    if not ref:
        return None, None
    provider, _, model = ref.partition("/")
    return (provider, model) if model else (None, provider)


def context_window(config: Config, ref: str | None) -> int | None:
    provider, model = split_model_ref(ref)
    for entry in config.models.providers:
        if entry.name.lower() == (provider or "").lower():
            for known in entry.models:
                if known.id == model:
                    return known.context_window
    return None


def age_ms(updated_at: int | None, now: int) -> int | None:
    return None if updated_at is None else max(0, now - updated_at)


def session_row(info: SessionInfo, config: Config) -> dict[str, Any]:
    """A `sessions.list` row."""
    provider, model = split_model_ref(info.model)
    row: dict[str, Any] = {
        **_key_fields(info.key),
        "kind": session_kind(info.key),
        "agentId": info.agent_id,
        "updatedAt": info.updated_at,
        "sessionId": info.session_id,
        "abortedLastRun": info.aborted_last_run,
        "inputTokens": info.input_tokens,
        "outputTokens": info.output_tokens,
        "totalTokens": info.total_tokens,
    }
    if provider:
        row["modelProvider"] = provider
    if model:
        row["model"] = model
    if (window := context_window(config, info.model)) is not None:
        row["contextTokens"] = window
    return row


def session_status(info: SessionInfo, config: Config, now: int) -> dict[str, Any]:
    """A `status` SessionStatus. Our counters are running totals of the transcript, not the
    last call's context use, so remaining/percent are not computed."""
    window = context_window(config, info.model)
    flags = [f"id:{info.session_id}"] + (["aborted"] if info.aborted_last_run else [])
    return {
        "agentId": info.agent_id,
        **_key_fields(info.key),
        "kind": session_kind(info.key),
        "sessionId": info.session_id,
        "updatedAt": info.updated_at,
        "age": age_ms(info.updated_at, now),
        "abortedLastRun": info.aborted_last_run,
        "inputTokens": info.input_tokens,
        "outputTokens": info.output_tokens,
        "totalTokens": info.total_tokens,
        "remainingTokens": None,
        "percentUsed": None,
        "model": split_model_ref(info.model)[1],
        "contextTokens": window,
        "flags": flags,
    }


def recent_entry(info: SessionInfo, now: int) -> dict[str, Any]:
    return {
        **_key_fields(info.key),
        "updatedAt": info.updated_at,
        "age": age_ms(info.updated_at, now),
    }


def default_model(config: Config, default_ref: str) -> dict[str, Any]:
    provider, model = split_model_ref(default_ref)
    return {
        "modelProvider": provider,
        "model": model,
        "contextTokens": context_window(config, default_ref),
    }


def strip_envelope(text: str) -> str:
    return _ENVELOPE.sub("", text, count=1)


def transcript_messages(messages: list[TranscriptMessage]) -> list[dict[str, Any]]:
    """`chat.history` messages; a tool result names its tool, from the call it answers."""
    names = {c.id: c.name for m in messages for c in m.message.tool_calls}
    return [transcript_message(m, names) for m in messages]


def transcript_message(
    message: TranscriptMessage, tool_names: dict[str, str] | None = None
) -> dict[str, Any]:
    """A `chat.history` message (agent-runtime.md §5 shape): text, image and toolCall blocks;
    tool results as `toolResult` messages. Image bytes are not kept, only their type and size."""
    stored = message.message
    if stored.role == "tool":
        return {
            "role": "toolResult",
            "toolCallId": stored.tool_call_id,
            "toolName": (tool_names or {}).get(stored.tool_call_id or ""),
            "content": [{"type": "text", "text": stored.text}],
            "isError": stored.is_error,
            "timestamp": message.ts,
        }
    blocks: list[dict[str, Any]] = []
    for part in stored.content:
        if isinstance(part, TextPart):
            text = strip_envelope(part.text) if stored.role == "user" and not blocks else part.text
            blocks.append({"type": "text", "text": text})
        else:
            blocks.append({"type": "image", "mimeType": part.media_type, "size": part.size})
    if stored.role == "user" and not blocks:
        blocks.append({"type": "text", "text": ""})
    blocks += [tool_call_block(call) for call in stored.tool_calls]
    item: dict[str, Any] = {"role": stored.role, "content": blocks, "timestamp": message.ts}
    if stored.role != "assistant":
        return item
    stop = _STOP_REASONS.get(message.status, message.status)
    item["stopReason"] = "toolUse" if stop == "stop" and stored.tool_calls else stop
    provider, model = split_model_ref(message.model)
    if provider:
        item["provider"] = provider
    if model:
        item["model"] = model
    if message.input_tokens is not None or message.output_tokens is not None:
        used_in, used_out = message.input_tokens or 0, message.output_tokens or 0
        item["usage"] = {"input": used_in, "output": used_out, "totalTokens": used_in + used_out}
    if message.error:
        item["errorMessage"] = message.error
    return item


def echo_model_entry() -> dict[str, Any]:
    return {"id": ECHO_MODEL_ID, "name": "Echo (offline)", "provider": ECHO_PROVIDER_NAME}
