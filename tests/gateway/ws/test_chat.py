"""chat.send / chat.history / chat.abort, chat events, and sessions shared with HTTP."""

from __future__ import annotations

import pytest

from moltbot.client import GatewayError
from tests.conftest import TOKEN, make_config
from tests.fake_upstreams import FakeOpenAI, provider_config
from tests.gateway.ws.wsutil import collect_until, is_chat_end


def upstream_config(state_dir, up: FakeOpenAI):
    return make_config(state_dir, providers=(provider_config(up),), primary="up/m1")


async def test_chat_send_streams_chat_events_to_a_final(
    state_dir, start_ws, open_client, up: FakeOpenAI
):
    client = await open_client(await start_ws(upstream_config(state_dir, up)))
    up.stream(["Hi ", "there, ", "friend"])
    started = await client.request(
        "chat.send", {"sessionKey": "main", "message": "hello", "idempotencyKey": "c1"}
    )
    assert started == {"runId": "c1", "status": "started"}
    events = await collect_until(client, is_chat_end("c1"))
    chats = [e.payload for e in events if e.name == "chat"]
    assert not [e for e in events if e.name == "agent"]  # chat clients get chat events only
    final = chats[-1]
    assert final["state"] == "final" and final["sessionKey"] == "agent:main:main"
    assert final["message"]["role"] == "assistant"
    assert final["message"]["content"] == [{"type": "text", "text": "Hi there, friend"}]
    assert final["stopReason"] == "stop" and final["usage"]["output"] == 3
    assert all(c["state"] == "delta" for c in chats[:-1])
    seqs = [c["seq"] for c in chats]
    assert seqs == sorted(seqs) and final["seq"] >= 4  # mirrors the agent events' seq

    # The user turn is stored with its timestamp envelope; history shows the text as typed.
    history = await client.request("chat.history", {"sessionKey": "main", "limit": 10})
    assert history["sessionKey"] == "agent:main:main" and history["sessionId"]
    user, assistant = history["messages"]
    assert user == {
        "role": "user",
        "content": [{"type": "text", "text": "hello"}],
        "timestamp": user["timestamp"],
    }
    assert assistant["content"][0]["text"] == "Hi there, friend"
    assert assistant["stopReason"] == "stop" and assistant["model"] == "m1"
    assert up.requests[-1].last_user_text().endswith("] hello")


async def test_chat_send_idempotency(state_dir, start_ws, open_client, up: FakeOpenAI):
    client = await open_client(await start_ws(upstream_config(state_dir, up)))
    up.hang(after_chunks=1)
    params = {"sessionKey": "main", "message": "slow", "idempotencyKey": "same"}
    assert (await client.request("chat.send", params))["status"] == "started"
    await up.wait_until(lambda: up.active_streams == 1)  # the hang is used by this run
    assert await client.request("chat.send", params) == {"runId": "same", "status": "in_flight"}
    await client.request("chat.abort", {"sessionKey": "main"})
    await client.request("agent.wait", {"runId": "same"})
    with pytest.raises(GatewayError) as raised:  # it ended aborted: replayed as an error
        await client.request("chat.send", params)
    assert raised.value.code == "UNAVAILABLE" and raised.value.payload["status"] == "error"
    done = {"sessionKey": "main", "message": "quick", "idempotencyKey": "done"}
    await client.request("chat.send", done)
    await collect_until(client, is_chat_end("done"))
    assert await client.request("chat.send", done) == {"runId": "done", "status": "ok"}
    assert len(up.requests) == 2


async def test_chat_abort_stops_a_slow_run(state_dir, start_ws, open_client, up: FakeOpenAI):
    gateway = await start_ws(upstream_config(state_dir, up))
    client = await open_client(gateway)
    up.hang(after_chunks=2)
    await client.request(
        "chat.send", {"sessionKey": "work", "message": "go", "idempotencyKey": "s"}
    )
    await collect_until(client, lambda e: e.name == "chat" and e.payload["state"] == "delta")
    result = await client.request("chat.abort", {"sessionKey": "work"})
    assert result == {"ok": True, "aborted": True, "runIds": ["s"]}
    (aborted,) = [e.payload for e in await collect_until(client, is_chat_end("s"))][-1:]
    assert aborted["state"] == "aborted" and aborted["stopReason"] == "rpc"
    assert aborted["message"]["content"][0]["text"]  # the partial text so far
    await up.wait_disconnect()  # the upstream request was dropped
    again = await client.request("chat.abort", {"sessionKey": "work", "runId": "s"})
    assert again == {"ok": True, "aborted": False, "runIds": []}
    unknown = await client.request("chat.abort", {"sessionKey": "work", "runId": "nope"})
    assert unknown == {"ok": True, "aborted": False, "runIds": []}
    with pytest.raises(GatewayError) as raised:
        await client.request("chat.abort", {"sessionKey": "other", "runId": "s"})
    assert raised.value.message == "runId does not match sessionKey"
    history = await client.request("chat.history", {"sessionKey": "work"})
    assert history["messages"][-1]["stopReason"] == "aborted"


async def test_stop_message_aborts_the_session(state_dir, start_ws, open_client, up: FakeOpenAI):
    client = await open_client(await start_ws(upstream_config(state_dir, up)))
    up.hang(after_chunks=1)
    await client.request(
        "chat.send", {"sessionKey": "main", "message": "go", "idempotencyKey": "r"}
    )
    await up.wait_until(lambda: up.active_streams == 1)
    stop = {"sessionKey": "main", "message": " /STOP ", "idempotencyKey": "stop-1"}
    assert await client.request("chat.send", stop) == {"ok": True, "aborted": True, "runIds": ["r"]}
    events = await collect_until(client, is_chat_end("r"))
    assert events[-1].payload["stopReason"] == "stop"


async def test_chat_bad_params(state_dir, start_ws, open_client):
    client = await open_client(await start_ws(make_config(state_dir)))
    cases = [
        ("chat.send", {"sessionKey": "main", "message": " ", "idempotencyKey": "k"},
         "message or attachment required"),
        ("chat.send", {"sessionKey": "main", "message": "hi"},
         "invalid chat.send params: at root: must have required property 'idempotencyKey'"),
        ("chat.history", {"sessionKey": "main", "limit": 2000},
         "invalid chat.history params: at /limit: must be <= 1000"),
        ("chat.history", {}, "invalid chat.history params: at root: must have required property "
         "'sessionKey'"),
        ("chat.abort", {"sessionKey": 3},
         "invalid chat.abort params: at /sessionKey: must be string"),
    ]  # fmt: skip
    for method, params, message in cases:
        with pytest.raises(GatewayError) as raised:
            await client.request(method, params)
        assert (raised.value.code, raised.value.message) == ("INVALID_REQUEST", message)
    assert (await client.request("chat.history", {"sessionKey": "never-used"}))["messages"] == []


async def test_http_turns_share_the_session_with_ws(state_dir, start_ws, open_client, http):
    gateway = await start_ws(make_config(state_dir))
    watcher = await open_client(gateway)
    assert (await watcher.request("chat.history", {"sessionKey": "shared"}))["messages"] == []
    body = {"model": "moltbot", "messages": [{"role": "user", "content": "hello over http"}]}
    headers = {"Authorization": f"Bearer {TOKEN}", "x-moltbot-session-key": "agent:main:shared"}
    async with http.post(gateway.url + "/v1/chat/completions", json=body, headers=headers) as r:
        assert r.status == 200
        completion = await r.json()
    run_id = completion["id"]
    # The watcher did chat.history on that session, so it saw the HTTP run's chat events.
    events = await collect_until(watcher, is_chat_end(run_id))
    assert events[-1].payload["message"]["content"][0]["text"] == "hello over http"
    history = await watcher.request("chat.history", {"sessionKey": "agent:main:shared"})
    assert [m["role"] for m in history["messages"]] == ["user", "assistant"]
    assert history["messages"][0]["content"][0]["text"] == "hello over http"
    # And back: a WS turn on the same key is part of the HTTP session's history.
    await watcher.request(
        "agent",
        {"message": "and from ws", "idempotencyKey": "ws-turn", "sessionKey": "shared"},
        expect_final=True,
    )
    history = await watcher.request("chat.history", {"sessionKey": "shared"})
    assert len(history["messages"]) == 4


async def test_deleting_a_busy_session_stops_its_run_first(
    state_dir, start_ws, open_client, up: FakeOpenAI
):
    gateway = await start_ws(upstream_config(state_dir, up))
    client = await open_client(gateway)
    up.hang(after_chunks=1)
    params = {"sessionKey": "busy", "message": "go", "idempotencyKey": "b"}
    await client.request("chat.send", params)
    await up.wait_until(lambda: up.active_streams == 1)
    result = await client.request("sessions.delete", {"key": "busy"})
    # The aborted turn was saved when the run ended, then the session went with it.
    assert result == {"ok": True, "key": "agent:main:busy", "deleted": True, "archived": []}
    assert gateway.runtime.get_run("b").status == "aborted"
    assert await gateway.runtime.store.get("agent:main:busy") is None
