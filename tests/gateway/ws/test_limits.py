"""Length caps on session keys, and no frame above the advertised maxPayload whatever is stored:
huge keys left by an older gateway, many sessions, long messages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType

from moltbot.agents.session_keys import MAX_SESSION_KEY_CHARS
from moltbot.agents.sessions import SessionStore, TurnRecord
from moltbot.config.model import AgentConfig
from moltbot.gateway.ws import WsOptions
from moltbot.gateway.ws.protocol import MAX_PAYLOAD_BYTES
from tests.conftest import make_config
from tests.gateway.ws.wsutil import WAIT, Probe, connect_params

HUGE_KEY = "agent:main:openai-user:" + "u" * 1_000_000  # what a 1 MB `user` used to become
EVERYTHING = {"includeDerivedTitles": True, "includeLastMessage": True}


async def _store_turns(path: Path, turns: list[tuple[str, str, str]]) -> None:
    """Write (key, agent, text) turns straight into the session store, as an older gateway
    without the caps could have."""
    store = await SessionStore.open(path)
    try:
        for n, (key, agent, text) in enumerate(turns):
            await store.record_turn(
                TurnRecord(key, agent, f"run-{n}", text, text[::-1], "ok", n + 1, n + 2)
            )
    finally:
        await store.close()


async def _sized(probe: Probe, method: str, params: Any = None, **frame: Any) -> tuple[int, Any]:
    """Send a request; the byte size of its answer frame and the answer."""
    request = {"type": "req", "id": "sized", "method": method, **frame}
    if params is not None:
        request["params"] = params
    await probe.send(request)
    while True:
        message = await probe.ws.receive(timeout=WAIT)
        assert message.type is WSMsgType.TEXT, (method, message)
        answer = json.loads(message.data)
        if answer.get("type") == "res":
            return len(message.data.encode()), answer


async def _hello(open_probe: Any, gateway: Any) -> tuple[Probe, int, dict[str, Any]]:
    probe = await _fresh(open_probe, gateway)
    size, hello = await _sized(probe, "connect", connect_params())
    assert hello["ok"] is True, hello
    return probe, size, hello["payload"]


@pytest.mark.parametrize(
    ("method", "params", "where"),
    [
        ("chat.send", {"message": "hi", "idempotencyKey": "i"}, "sessionKey"),
        ("chat.history", {}, "sessionKey"),
        ("chat.abort", {}, "sessionKey"),
        ("agent", {"message": "hi", "idempotencyKey": "j"}, "sessionKey"),
        ("agent.follow", {}, "sessionKey"),
        ("sessions.reset", {}, "key"),
        ("sessions.delete", {}, "key"),
        ("sessions.preview", None, "keys/0"),
    ],
)
async def test_session_keys_longer_than_the_cap_are_refused(
    state_dir, start_ws, open_probe, method, params, where
):
    gateway = await start_ws(make_config(state_dir))
    probe = await open_probe(gateway)
    assert (await probe.hello())["ok"] is True
    long_key = "k" * (MAX_SESSION_KEY_CHARS + 1)
    name = where.split("/")[0]
    sent = {**(params or {}), name: [long_key] if name == "keys" else long_key}
    answer = await probe.request(method, sent)
    assert answer["ok"] is False
    assert answer["error"]["code"] == "INVALID_REQUEST"
    expected = f"at /{where}: must NOT have more than {MAX_SESSION_KEY_CHARS} characters"
    assert expected in answer["error"]["message"]
    history = await probe.request("chat.history", {"sessionKey": "k" * MAX_SESSION_KEY_CHARS})
    assert history["ok"] is True  # at the cap: fine
    assert await gateway.runtime.store.list() == ([], 0)


async def test_a_huge_key_from_an_older_gateway_is_listed_cut_and_deletable(
    state_dir, start_ws, open_probe
):
    long_text = "x" * 300_000
    await _store_turns(
        state_dir / "sessions.sqlite",
        [(HUGE_KEY, "main", "hello")] + [("agent:main:big", "main", long_text)] * 3,
    )
    gateway = await start_ws(make_config(state_dir))
    probe, size, _ = await _hello(open_probe, gateway)
    limit = MAX_PAYLOAD_BYTES
    for method, params in [
        ("health", {"probe": True}),
        ("status", {}),
        ("sessions.list", EVERYTHING),
        ("sessions.preview", {"keys": ["agent:main:big"], "limit": 50, "maxChars": 2000}),
    ]:
        size, answer = await _sized(probe, method, params)
        assert answer["ok"] is True, (method, answer)
        assert size <= limit, method
    _, hello = await _sized(await _fresh(open_probe, gateway), "connect", connect_params())
    assert len(json.dumps(hello)) <= limit  # now with the cached health in its snapshot
    assert hello["payload"]["snapshot"]["health"]["sessions"]["count"] == 2

    size, history = await _sized(probe, "chat.history", {"sessionKey": "agent:main:big"})
    assert size <= limit
    messages = history["payload"]["messages"]
    assert 1 <= len(messages) < 6 and messages[-1]["role"] == "assistant"  # the newest kept

    _, listed = await _sized(probe, "sessions.list", {})
    [row] = [r for r in listed["payload"]["sessions"] if r.get("keyTruncated")]
    assert row["key"].startswith("agent:main:openai-user:uuu") and len(row["key"]) < 2000
    _, deleted = await _sized(probe, "sessions.delete", {"sessionId": row["sessionId"]})
    assert deleted["ok"] is True and deleted["payload"]["deleted"] is True
    assert await gateway.runtime.store.get(HUGE_KEY) is None
    _, again = await _sized(probe, "sessions.delete", {"sessionId": row["sessionId"]})
    assert again["error"]["message"] == f"no session has sessionId {row['sessionId']}"
    _, both = await _sized(probe, "sessions.delete", {"key": "a", "sessionId": "b"})
    assert "pass exactly one of key or sessionId" in both["error"]["message"]
    _, neither = await _sized(probe, "sessions.delete", {})
    assert "must have required property 'key'" in neither["error"]["message"]


async def test_one_message_longer_than_a_frame_comes_cut(state_dir, start_ws, open_probe):
    await _store_turns(state_dir / "sessions.sqlite", [("agent:main:one", "main", "é" * 400_000)])
    gateway = await start_ws(make_config(state_dir))
    probe, _, _ = await _hello(open_probe, gateway)
    size, history = await _sized(probe, "chat.history", {"sessionKey": "agent:main:one"})
    assert MAX_PAYLOAD_BYTES - 64 <= size <= MAX_PAYLOAD_BYTES
    [message] = history["payload"]["messages"]
    assert message["truncated"] is True and message["role"] == "assistant"
    assert set(message["content"][0]["text"]) == {"é"}


SMALL = WsOptions(max_payload=32 * 1024, preauth_max_payload=8 * 1024)


async def test_many_sessions_and_agents_fit_a_small_frame(state_dir, start_ws, open_probe):
    agents = tuple(AgentConfig(id=f"agent{n:02d}", default=n == 0) for n in range(20))
    key = "s" * (MAX_SESSION_KEY_CHARS - 20)
    turns = [
        (f"agent:agent{n % 20:02d}:{key}{n:04d}", f"agent{n % 20:02d}", "é" * 900)
        for n in range(300)
    ]
    await _store_turns(state_dir / "sessions.sqlite", turns)
    gateway = await start_ws(make_config(state_dir, agents=agents), SMALL)
    probe, _, hello = await _hello(open_probe, gateway)
    assert hello["policy"]["maxPayload"] == SMALL.max_payload
    keys = [k for k, _, _ in turns[:40]]  # 64 keys this long would not fit in a request
    for method, params in [
        ("health", {"probe": True}),
        ("status", {}),
        ("sessions.list", {"limit": 1000, **EVERYTHING}),
        ("sessions.preview", {"keys": keys, "limit": 50, "maxChars": 2000}),
        ("chat.history", {"sessionKey": turns[0][0]}),
    ]:
        size, answer = await _sized(probe, method, params)
        assert answer["ok"] is True, (method, answer)
        assert size <= SMALL.max_payload, method
        if method == "sessions.list":
            assert answer["payload"]["truncated"] is True
            assert 0 < answer["payload"]["count"] == len(answer["payload"]["sessions"]) < 300
    size, _ = await _sized(await _fresh(open_probe, gateway), "connect", connect_params())
    assert size <= SMALL.max_payload


async def test_an_answer_that_cannot_fit_is_an_error_not_an_oversized_frame(
    state_dir, start_ws, open_probe
):
    """The largest frame a client may send, answered with an error that echoes its id and its
    method name: a few bytes over. With a long id there is still room for an error with it; with
    a longer one, not even that: the error goes out with id "invalid"."""
    gateway = await start_ws(make_config(state_dir), SMALL)
    probe, _, _ = await _hello(open_probe, gateway)
    largest = SMALL.max_payload - 1
    for id_length, expected_id in ((16_000, "long"), (largest - 80, "invalid")):
        request_id = "i" * id_length
        empty = len(json.dumps({"type": "req", "id": request_id, "method": ""}))
        method = "m" * (largest - empty)
        size, answer = await _sized(probe, method, id=request_id)
        assert size <= SMALL.max_payload
        assert answer["ok"] is False and "exceeds maxPayload" in answer["error"]["message"]
        assert answer["id"] == (request_id if expected_id == "long" else "invalid")
    assert (await probe.request("health"))["ok"] is True  # and the connection goes on


async def _fresh(open_probe: Any, gateway: Any) -> Probe:
    """A new socket, its challenge read."""
    probe = await open_probe(gateway)
    await probe.frame()
    return probe


async def test_a_reply_too_long_for_an_event_frame_is_left_to_chat_history(
    state_dir, start_ws, open_probe
):
    """The echo model repeats a message that fills a request frame; the events that would carry
    it whole (with their larger envelope) are too large and not sent, the socket stays up, and
    the turn is in chat.history."""
    gateway = await start_ws(make_config(state_dir), SMALL)
    probe, _, _ = await _hello(open_probe, gateway)
    params = {"sessionKey": "main", "message": "", "idempotencyKey": "long-reply"}
    empty = len(json.dumps({"type": "req", "id": "sized", "method": "chat.send", "params": params}))
    params["message"] = "word " * ((SMALL.max_payload - 1 - empty) // 5)
    _, sent = await _sized(probe, "chat.send", params)
    assert sent["ok"] is True
    run = gateway.runtime.get_run("long-reply")
    if run is not None:
        await run.wait()
    history = {"type": "req", "id": "h", "method": "chat.history", "params": {"sessionKey": "main"}}
    await probe.send(history)
    states = []
    while True:  # every frame up to the answer, events included, fits
        message = await probe.ws.receive(timeout=WAIT)
        assert message.type is WSMsgType.TEXT
        assert len(message.data.encode()) <= SMALL.max_payload
        frame = json.loads(message.data)
        if frame.get("id") == "h":
            break
        if frame.get("event") == "chat":
            states.append(frame["payload"]["state"])
    assert "final" not in states  # it would have been over maxPayload
    shown = frame["payload"]["messages"]
    assert shown[-1]["role"] == "assistant" and "word word" in shown[-1]["content"][0]["text"]
