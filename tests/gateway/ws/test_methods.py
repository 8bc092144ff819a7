"""Every read/admin method: its answer on success, and INVALID_REQUEST naming the problem."""

from __future__ import annotations

import pytest

from moltbot.client import GatewayClient, GatewayError
from moltbot.config.model import AgentConfig, Identity, ModelConfig, ProviderConfig
from tests.conftest import make_config


async def turn(client: GatewayClient, message: str, key: str = "main", run_id: str = "") -> dict:
    """One agent turn on `key`, to its final answer."""
    params = {"message": message, "idempotencyKey": run_id or f"run-{message}", "sessionKey": key}
    return await client.request("agent", params, expect_final=True)


async def assert_invalid(client: GatewayClient, method: str, params: object, message: str) -> None:
    with pytest.raises(GatewayError) as raised:
        await client.request(method, params)
    assert raised.value.code == "INVALID_REQUEST"
    assert raised.value.message == message
    # The connection is still usable afterwards.
    assert (await client.request("agents.list"))["defaultId"]


async def test_health(state_dir, start_ws, open_client):
    client = await open_client(await start_ws(make_config(state_dir)))
    await turn(client, "hello")
    health = await client.request("health", {"probe": True})
    assert health["ok"] is True and health["defaultAgentId"] == "main"
    assert health["sessions"]["count"] == 1
    assert [r["key"] for r in health["sessions"]["recent"]] == ["agent:main:main"]
    assert health["agents"][0]["agentId"] == "main" and health["agents"][0]["isDefault"]
    assert health["agents"][0]["heartbeat"]["enabled"] is False
    assert await client.request("health") == health  # cached for a minute
    await assert_invalid(
        client, "health", {"probe": "yes"}, "invalid health params: at /probe: must be boolean"
    )


async def test_status(state_dir, start_ws, open_client):
    client = await open_client(await start_ws(make_config(state_dir)))
    await turn(client, "hello")
    status = await client.request("status")
    assert status["heartbeat"]["defaultAgentId"] == "main"
    sessions = status["sessions"]
    assert sessions["count"] == 1 and sessions["defaults"]["model"] == "echo"
    recent = sessions["recent"][0]
    assert recent["key"] == "agent:main:main" and recent["kind"] == "direct"
    assert recent["model"] == "echo" and recent["totalTokens"] > 0
    assert f"id:{recent['sessionId']}" in recent["flags"]
    assert sessions["byAgent"][0]["agentId"] == "main"


async def test_agents_list(state_dir, start_ws, open_client):
    agents = (
        AgentConfig(id="zeta"),
        AgentConfig(id="ops", default=True, name="Ops", identity=Identity(emoji="🛠")),
        AgentConfig(id="alpha", identity=Identity(avatar="https://example.com/a.png")),
    )
    client = await open_client(await start_ws(make_config(state_dir, agents=agents)))
    result = await client.request("agents.list")
    assert result["defaultId"] == "ops" and result["mainKey"] == "main"
    assert result["scope"] == "per-sender"
    assert [a["id"] for a in result["agents"]] == ["ops", "alpha", "zeta"]  # no implicit "main"
    assert result["agents"][0] == {"id": "ops", "name": "Ops", "identity": {"emoji": "🛠"}}
    assert result["agents"][1]["identity"]["avatarUrl"] == "https://example.com/a.png"
    await assert_invalid(
        client,
        "agents.list",
        {"x": 1},
        "invalid agents.list params: at root: unexpected property 'x'",
    )


async def test_models_list(state_dir, start_ws, open_client):
    provider = ProviderConfig(
        name="Local",
        base_url="http://127.0.0.1:9/v1",
        api="openai-completions",
        models=(ModelConfig(id="qwen", name="Qwen", context_window=32768), ModelConfig("a", "A")),
    )
    config = make_config(state_dir, providers=(provider,))
    client = await open_client(await start_ws(config))
    models = (await client.request("models.list"))["models"]
    assert [(m["provider"], m["id"]) for m in models] == [
        ("builtin", "echo"),
        ("local", "a"),
        ("local", "qwen"),
    ]
    assert models[2]["contextWindow"] == 32768
    await assert_invalid(
        client, "models.list", [], "invalid models.list params: at root: must be object"
    )


async def test_sessions_list(state_dir, start_ws, open_client):
    client = await open_client(await start_ws(make_config(state_dir)))
    await turn(client, "first question about ducks", key="ducks")
    await turn(client, "hello", key="main")
    result = await client.request("sessions.list")
    assert result["count"] == 2 and result["path"].endswith("sessions.sqlite")
    assert [s["key"] for s in result["sessions"]] == ["agent:main:main", "agent:main:ducks"]
    row = result["sessions"][1]
    assert row["kind"] == "direct" and row["modelProvider"] == "builtin" and row["sessionId"]
    found = await client.request(
        "sessions.list",
        {"search": "DUCK", "includeDerivedTitles": True, "includeLastMessage": True, "limit": 5},
    )
    (ducks,) = found["sessions"]
    assert ducks["derivedTitle"] == "first question about ducks"
    assert ducks["lastMessagePreview"].endswith("first question about ducks")
    assert (await client.request("sessions.list", {"label": "x"}))["sessions"] == []
    await assert_invalid(
        client,
        "sessions.list",
        {"limit": 0},
        "invalid sessions.list params: at /limit: must be >= 1",
    )


async def test_sessions_preview(state_dir, start_ws, open_client):
    client = await open_client(await start_ws(make_config(state_dir)))
    await turn(client, "a fairly long message " * 5)
    await client.request("sessions.reset", {"key": "empty-one"})
    result = await client.request(
        "sessions.preview", {"keys": ["main", "empty-one", "nope"], "maxChars": 20}
    )
    ok, empty, missing = result["previews"]
    assert ok["key"] == "main" and ok["status"] == "ok"
    assert [i["role"] for i in ok["items"]] == ["user", "assistant"]
    assert ok["items"][0]["text"] == "a fairly long mes..."
    assert (empty["status"], missing["status"]) == ("empty", "missing")
    await assert_invalid(
        client,
        "sessions.preview",
        {"keys": []},
        "invalid sessions.preview params: at /keys: must NOT have fewer than 1 items",
    )
    await assert_invalid(
        client,
        "sessions.preview",
        {},
        "invalid sessions.preview params: at root: must have required property 'keys'",
    )


async def test_sessions_reset(state_dir, start_ws, open_client):
    client = await open_client(await start_ws(make_config(state_dir)))
    await turn(client, "remember me")
    before = await client.request("chat.history", {"sessionKey": "main"})
    result = await client.request("sessions.reset", {"key": "main"})
    assert result["ok"] is True and result["key"] == "agent:main:main"
    assert result["entry"]["sessionId"] != before["sessionId"]
    after = await client.request("chat.history", {"sessionKey": "main"})
    assert after["messages"] == [] and after["sessionId"] == result["entry"]["sessionId"]
    await assert_invalid(
        client,
        "sessions.reset",
        {"key": ""},
        "invalid sessions.reset params: at /key: must NOT have fewer than 1 characters",
    )


async def test_sessions_delete(state_dir, start_ws, open_client):
    client = await open_client(await start_ws(make_config(state_dir)))
    await turn(client, "doomed", key="scratch")
    result = await client.request("sessions.delete", {"key": "scratch"})
    assert result == {"ok": True, "key": "agent:main:scratch", "deleted": True, "archived": []}
    again = await client.request("sessions.delete", {"key": "agent:main:scratch"})
    assert again["deleted"] is False
    await assert_invalid(
        client,
        "sessions.delete",
        {"key": "main"},
        "Cannot delete the main session (agent:main:main).",
    )


async def test_a_failing_handler_answers_unavailable(state_dir, start_ws, open_client):
    gateway = await start_ws(make_config(state_dir))
    client = await open_client(gateway)
    await gateway.runtime.store.close()  # every store call now fails
    with pytest.raises(GatewayError) as raised:
        await client.request("sessions.list")
    assert raised.value.code == "UNAVAILABLE"
    assert "session store is closed" in raised.value.message
    assert (await client.request("agents.list"))["defaultId"] == "main"
