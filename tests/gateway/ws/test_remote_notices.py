"""The notices that carry runs between processes sharing a store stay within PostgreSQL's
payload limit, whatever the keys and texts hold."""

from __future__ import annotations

from moltbot.agents.session_keys import MAX_SESSION_KEY_CHARS
from moltbot.agents.store.pg_channel import encode
from moltbot.gateway.ws.remote_runs import _watch_batches, event_notices


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
