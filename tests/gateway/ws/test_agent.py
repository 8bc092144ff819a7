"""The `agent` method: two answers, agent events, idempotency, waiting, following."""

from __future__ import annotations

import asyncio
import re

import pytest

from moltbot.client import GatewayError
from moltbot.config.model import AgentConfig
from tests.conftest import make_config
from tests.fake_upstreams import FakeOpenAI, provider_config
from tests.gateway.ws.wsutil import WAIT, collect_until, is_agent_end


def upstream_config(state_dir, up: FakeOpenAI):
    return make_config(state_dir, providers=(provider_config(up),), primary="up/m1")


async def test_agent_acks_streams_events_then_answers_again(state_dir, start_ws, open_probe):
    gateway = await start_ws(make_config(state_dir))
    probe = await open_probe(gateway)
    assert (await probe.hello())["ok"]
    params = {"message": "hello agent", "idempotencyKey": "run-1"}
    await probe.send({"type": "req", "id": "a1", "method": "agent", "params": params})

    ack = await probe.response("a1")
    assert ack["ok"] is True
    assert ack["payload"]["runId"] == "run-1" and ack["payload"]["status"] == "accepted"
    assert isinstance(ack["payload"]["acceptedAt"], int)

    final = await probe.response("a1")  # same id, after the run's events
    payload = final["payload"]
    assert final["ok"] is True
    assert payload["status"] == "ok" and payload["summary"] == "completed"
    (reply,) = payload["result"]["payloads"]
    assert reply["text"].endswith("] hello agent")  # echo of the timestamped message
    assert reply["text"].startswith("[") and reply["mediaUrl"] is None
    meta = payload["result"]["meta"]
    assert meta["aborted"] is False and meta["durationMs"] >= 0
    session = await gateway.runtime.store.get("agent:main:main")
    assert meta["agentMeta"]["sessionId"] == session.session_id
    assert meta["agentMeta"]["provider"] == "builtin" and meta["agentMeta"]["model"] == "echo"
    assert meta["agentMeta"]["usage"]["output"] == 6

    events = [e for e in probe.events if e["event"] == "agent"]
    run_seqs = [e["payload"]["seq"] for e in events]
    assert run_seqs == list(range(1, len(events) + 1))
    socket_seqs = [e["seq"] for e in events]
    assert socket_seqs == list(range(socket_seqs[0], socket_seqs[0] + len(events)))
    first, last = events[0]["payload"], events[-1]["payload"]
    assert first["data"]["phase"] == "start" and last["data"]["phase"] == "end"
    assert all(e["payload"]["sessionKey"] == "agent:main:main" for e in events)
    # Assistant events carry only their new text; together they make the reply.
    deltas = [e["payload"]["data"] for e in events if e["payload"]["stream"] == "assistant"]
    assert all(set(d) == {"delta"} for d in deltas)
    assert "".join(d["delta"] for d in deltas) == reply["text"]


async def test_same_idempotency_key_returns_the_same_run(state_dir, start_ws, open_client):
    gateway = await start_ws(make_config(state_dir))
    client = await open_client(gateway)
    params = {"message": "only once", "idempotencyKey": "same-key"}
    first = await client.request("agent", params, expect_final=True)
    second = await client.request("agent", params, expect_final=True)
    assert second == first
    other = await open_client(gateway)
    assert await other.request("agent", params, expect_final=True) == first
    history = await client.request("chat.history", {"sessionKey": "main"})
    assert len(history["messages"]) == 2  # one turn, not three


async def test_agent_rejects_bad_params(state_dir, start_ws, open_client):
    agents = (AgentConfig(id="main"), AgentConfig(id="ops"))
    client = await open_client(await start_ws(make_config(state_dir, agents=agents)))
    cases = [
        ({"message": "x"}, "invalid agent params: at root: must have required property "
         "'idempotencyKey'"),
        ({"message": "", "idempotencyKey": "k"},
         "invalid agent params: at /message: must NOT have fewer than 1 characters"),
        ({"message": "x", "idempotencyKey": "k", "agentId": "ghost"},
         'invalid agent params: unknown agent id "ghost"'),
        ({"message": "x", "idempotencyKey": "k", "agentId": "ops", "sessionKey": "agent:main:x"},
         'invalid agent params: agent "ops" does not match session key agent "main"'),
        ({"message": "x", "idempotencyKey": "k", "timeout": -1},
         "invalid agent params: at /timeout: must be >= 0"),
        ({"message": "x", "idempotencyKey": "k", "sessionKey": "subagent:x"},
         'invalid agent params: session key "agent:main:subagent:x" is in a reserved namespace'),
    ]  # fmt: skip
    for params, message in cases:
        with pytest.raises(GatewayError) as raised:
            await client.request("agent", params, expect_final=True)
        assert (raised.value.code, raised.value.message) == ("INVALID_REQUEST", message)
    # Agent id and session key of that agent work.
    ok = await client.request(
        "agent", {"message": "hi", "idempotencyKey": "k2", "agentId": "ops"}, expect_final=True
    )
    assert ok["status"] == "ok"
    assert await gateway_session_exists(client, "agent:ops:main")


async def gateway_session_exists(client, key: str) -> bool:
    previews = await client.request("sessions.preview", {"keys": [key]})
    return previews["previews"][0]["status"] == "ok"


async def test_agent_wait_ok_and_timeout(state_dir, start_ws, open_client, up: FakeOpenAI):
    client = await open_client(await start_ws(upstream_config(state_dir, up)))
    await client.request("agent", {"message": "quick", "idempotencyKey": "fast"}, expect_final=True)
    waited = await client.request("agent.wait", {"runId": "fast"})
    assert waited["runId"] == "fast" and waited["status"] == "ok"
    assert waited["endedAt"] >= waited["startedAt"]

    up.hang(after_chunks=1)
    await client.request("agent", {"message": "slow", "idempotencyKey": "slow"})  # the ack
    waited = await client.request("agent.wait", {"runId": "slow", "timeoutMs": 50})
    assert waited == {"runId": "slow", "status": "timeout"}
    assert (await client.request("agent.wait", {"runId": "slow", "timeoutMs": 0}))[
        "status"
    ] == "timeout"
    # Aborting ends it: the waiter learns at once, and an aborted run is not "ok".
    waiting = asyncio.ensure_future(client.request("agent.wait", {"runId": "slow"}))
    await client.request("chat.abort", {"sessionKey": "main", "runId": "slow"})
    waited = await waiting
    assert waited["status"] == "error" and waited["aborted"] is True
    with pytest.raises(GatewayError) as raised:
        await client.request("agent.wait", {"runId": 5})
    assert raised.value.message == "invalid agent.wait params: at /runId: must be string"


async def test_a_second_client_follows_a_session(state_dir, start_ws, open_client):
    gateway = await start_ws(make_config(state_dir))
    runner, follower = await open_client(gateway), await open_client(gateway)
    followed = await follower.request("agent.follow", {"sessionKey": "main"})
    assert followed["sessionKey"] == "agent:main:main" and followed["following"] is True
    await runner.request(
        "agent", {"message": "watch this", "idempotencyKey": "watched"}, expect_final=True
    )
    events = await collect_until(follower, is_agent_end("watched"))
    agent_events = [e.payload for e in events if e.name == "agent"]
    assert [p["seq"] for p in agent_events] == list(range(1, len(agent_events) + 1))
    assert agent_events[-1]["data"]["phase"] == "end"
    # Unfollowed: the next run's events do not come.
    assert (await follower.request("agent.unfollow", {"sessionKey": "main"}))["removed"]
    await runner.request("agent", {"message": "x", "idempotencyKey": "unseen"}, expect_final=True)
    assert await follower.request("health")
    assert not [e for e in follower.queued_events() if e.name == "agent"]


async def test_follow_a_run_by_id_and_the_run_outlives_its_client(
    state_dir, start_ws, open_client, up: FakeOpenAI
):
    gateway = await start_ws(upstream_config(state_dir, up))
    starter, follower = await open_client(gateway), await open_client(gateway)
    up.stream(["one ", "two ", "three"], delay=0.05)
    await starter.request("agent", {"message": "count", "idempotencyKey": "long"})
    followed = await follower.request("agent.follow", {"runId": "long"})
    assert followed["following"] is True
    await starter.close()  # the run must go on and be saved
    events = await collect_until(follower, is_agent_end("long"))
    assert events[-1].payload["data"]["phase"] == "end"
    assert (await follower.request("agent.wait", {"runId": "long"}))["status"] == "ok"
    history = await follower.request("chat.history", {"sessionKey": "main"})
    assert history["messages"][-1]["content"][0]["text"] == "one two three"
    with pytest.raises(GatewayError) as raised:
        await follower.request("agent.follow", {"runId": "nope"})
    assert raised.value.message == 'unknown run id "nope"'
    with pytest.raises(GatewayError) as raised:
        await follower.request("agent.follow", {})
    assert raised.value.message == (
        "invalid agent.follow params: pass exactly one of runId or sessionKey"
    )


async def test_agent_run_failure_is_the_second_answer(
    state_dir, start_ws, open_client, up: FakeOpenAI
):
    client = await open_client(await start_ws(upstream_config(state_dir, up)))
    up.status(400, {"error": {"message": "bad model input", "type": "invalid_request_error"}})
    with pytest.raises(GatewayError) as raised:
        async with asyncio.timeout(WAIT):
            await client.request(
                "agent", {"message": "x", "idempotencyKey": "bad"}, expect_final=True
            )
    assert raised.value.code == "UNAVAILABLE"
    assert raised.value.payload["status"] == "error" and raised.value.payload["runId"] == "bad"
    assert "bad model input" in raised.value.message


async def test_ws_turns_are_stamped_in_the_configured_time_zone(state_dir, start_ws, open_client):
    gateway = await start_ws(make_config(state_dir, user_timezone="Asia/Tokyo"))
    client = await open_client(gateway)
    result = await client.request(
        "agent", {"message": "what time is it", "idempotencyKey": "tz"}, expect_final=True
    )
    (reply,) = result["result"]["payloads"]  # the echo model repeats the stamped message
    assert re.fullmatch(
        r"\[\w{3} \d{4}-\d{2}-\d{2} \d{2}:\d{2} JST\] what time is it", reply["text"]
    )
    usage = result["result"]["meta"]["agentMeta"]["usage"]
    assert set(usage) == {"input", "output", "cacheRead", "cacheWrite", "total"}
