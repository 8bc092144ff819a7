"""The notices that carry runs between processes sharing a store: within PostgreSQL's payload
limit whatever the keys and texts hold, and a relayed event as good as the original for a chat
view."""

from __future__ import annotations

from moltbot.agents.events import (
    AgentEvent,
    RunEnded,
    RunStarted,
    TextChunk,
    UsageReport,
    event_from_payload,
)
from moltbot.agents.session_keys import MAX_SESSION_KEY_CHARS
from moltbot.agents.store.pg_channel import encode
from moltbot.gateway.ws.remote_runs import _watch_batches, event_notices
from moltbot.providers.base import Usage


def test_watched_keys_go_out_in_notices_that_each_fit() -> None:
    keys = [f"{i}" + "😀" * (MAX_SESSION_KEY_CHARS - 1) for i in range(30)] + ["plain"]
    batches = _watch_batches(keys)
    assert [k for batch in batches for k in batch] == keys
    assert len(batches) > 1
    for batch in batches:
        assert encode({"t": "watch", "keys": batch, "o": "x" * 32}) is not None


def test_a_long_event_goes_out_in_parts_that_each_fit() -> None:
    payload = {"runId": "r", "stream": "assistant", "data": {"delta": "é\x01" * 5000}}
    notices = event_notices(payload)
    assert len(notices) > 1
    assert all(encode({**n, "o": "x" * 32}) is not None for n in notices)


def test_a_relayed_payload_is_the_event_again_for_a_chat_view() -> None:
    usage = Usage(input_tokens=7, output_tokens=3, cache_read_tokens=2)
    items = [
        TextChunk("héllo"),
        UsageReport(usage),
        RunEnded("ok", 1, 2, "tool_calls", "up/m1"),
        RunEnded("aborted", 1, 2, "stop", None, error="rpc"),
        RunEnded("error", None, 2, "stop", None, error="boom", error_kind="timeout"),
    ]
    for seq, item in enumerate(items, 1):
        event = AgentEvent("run-1", seq, 1_000 + seq, "agent:main:k", item)
        assert event_from_payload(event.payload()) == event
    started = AgentEvent("run-1", 9, 1, "agent:main:k", RunStarted(1))
    assert event_from_payload(started.payload()) is None  # a chat view has no use for it
    assert event_from_payload({"runId": 1, "data": "x"}) is None
