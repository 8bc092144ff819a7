"""Length caps on session keys, and no frame above the advertised maxPayload whatever is stored:
huge keys left by an older gateway, many sessions, long messages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType

from moltbot.agents.session_keys import MAX_SESSION_KEY_CHARS
from moltbot.agents.store.records import TurnRecord
from moltbot.agents.store.sqlite import SqliteStore
from moltbot.config.model import AgentConfig
from moltbot.content import assistant_text, user_text
from moltbot.gateway.ws import WsOptions
from moltbot.gateway.ws.protocol import MAX_PAYLOAD_BYTES
from tests.conftest import make_config
from tests.gateway.ws.wsutil import WAIT, Probe, connect_params

HUGE_KEY = "agent:main:openai-user:" + "u" * 1_000_000  # what a 1 MB `user` used to become
EVERYTHING = {"includeDerivedTitles": True, "includeLastMessage": True}


async def _store_turns(path: Path, turns: list[tuple[str, str, str]]) -> None:
    """Write (key, agent, text) turns straight into the session store, as an older gateway
    without the caps could have."""
    store = await SqliteStore.open(path)
    try:
        for n, (key, agent, text) in enumerate(turns):
            talk = (user_text(text), assistant_text(text[::-1]))
            await store.record_turn(
                TurnRecord(key, agent, f"run-{n}", talk, "ok", n + 1, n + 2)
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


async def test_an_error_that_would_not_fit_is_cut_short_and_long_ids_are_refused(
    state_dir, start_ws, open_probe
):
    """The largest frame a client may send, answered with an error that quotes its method
    name: that answer would be a few bytes over maxPayload, a short error goes instead. Ids,
    repeated in every answer, are refused past 256 characters."""
    gateway = await start_ws(make_config(state_dir), SMALL)
    probe, _, _ = await _hello(open_probe, gateway)
    request_id = "i" * 256
    empty = len(json.dumps({"type": "req", "id": request_id, "method": ""}))
    size, answer = await _sized(probe, "m" * (SMALL.max_payload - 1 - empty), id=request_id)
    assert size <= SMALL.max_payload
    assert answer["id"] == request_id and answer["ok"] is False
    assert answer["error"]["message"] == "the error answer exceeds maxPayload (32768)"
    _, refused = await _sized(probe, "health", id="i" * 257)
    assert refused["id"] == "invalid" and refused["error"]["code"] == "INVALID_REQUEST"
    assert "at /id: must NOT have more than 256 characters" in refused["error"]["message"]
    assert (await probe.request("health"))["ok"] is True  # and the connection goes on


async def _fresh(open_probe: Any, gateway: Any) -> Probe:
    """A new socket, its challenge read."""
    probe = await open_probe(gateway)
    await probe.frame()
    return probe
