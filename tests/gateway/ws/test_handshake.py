"""The handshake: challenge, connect, hello-ok, and every way it can fail."""

from __future__ import annotations

import dataclasses

from moltbot.config.model import RateLimitConfig
from moltbot.gateway.ws import WsOptions
from moltbot.gateway.ws.methods import METHODS
from tests.conftest import TOKEN, make_config
from tests.gateway.ws.wsutil import connect_params


async def test_good_handshake_gets_challenge_then_hello_ok(state_dir, start_ws, open_probe):
    gateway = await start_ws(make_config(state_dir))
    probe = await open_probe(gateway)
    challenge = await probe.frame()
    assert challenge["type"] == "event" and challenge["event"] == "connect.challenge"
    assert "seq" not in challenge
    assert challenge["payload"]["nonce"] and isinstance(challenge["payload"]["ts"], int)

    res = await probe.request("connect", connect_params())
    assert res["ok"] is True
    hello = res["payload"]
    assert hello["type"] == "hello-ok" and hello["protocol"] == 3
    assert hello["server"]["version"] and hello["server"]["connId"]
    assert set(hello["features"]["methods"]) == set(METHODS)
    assert {"agent", "chat", "tick", "shutdown"} <= set(hello["features"]["events"])
    snapshot = hello["snapshot"]
    assert snapshot["presence"] == [] and isinstance(snapshot["health"], dict)
    assert snapshot["stateVersion"] == {"presence": 1, "health": 1}
    assert snapshot["uptimeMs"] >= 0 and snapshot["stateDir"] == str(state_dir)
    assert snapshot["sessionDefaults"] == {
        "defaultAgentId": "main",
        "mainKey": "main",
        "mainSessionKey": "agent:main:main",
        "scope": "per-sender",
    }
    assert hello["policy"] == {
        "maxPayload": 512 * 1024,
        "maxBufferedBytes": 1536 * 1024,
        "tickIntervalMs": 30000,
    }
    assert (await probe.request("health"))["ok"] is True


async def test_ws_path_and_device_identity_with_token(state_dir, start_ws, open_probe):
    gateway = await start_ws(make_config(state_dir))
    probe = await open_probe(gateway, "/ws")
    device = {"id": "dev1", "publicKey": "pk", "signature": "sig", "signedAt": 1}
    assert (await probe.hello(device=device))["ok"] is True


async def test_wrong_token_is_refused_and_closed(state_dir, start_ws, open_probe):
    gateway = await start_ws(make_config(state_dir))
    probe = await open_probe(gateway)
    res = await probe.hello(token="wrong")
    assert res["ok"] is False
    assert res["error"]["code"] == "INVALID_REQUEST"
    assert res["error"]["message"].startswith("unauthorized: gateway token mismatch")
    code, reason = await probe.closed()
    assert code == 1008 and reason.startswith("unauthorized: gateway token mismatch")


async def test_missing_token_says_so(state_dir, start_ws, open_probe):
    gateway = await start_ws(make_config(state_dir))
    probe = await open_probe(gateway)
    res = await probe.hello(token=None)
    assert res["error"]["message"].startswith("unauthorized: gateway token missing")
    assert (await probe.closed())[0] == 1008


async def test_password_mode_checks_the_password(state_dir, start_ws, open_probe):
    config = make_config(state_dir)
    auth = dataclasses.replace(config.gateway.auth, mode="password", password="pw-1")
    config = dataclasses.replace(config, gateway=dataclasses.replace(config.gateway, auth=auth))
    gateway = await start_ws(config)
    refused = await open_probe(gateway)
    res = await refused.hello()  # a token does not count in password mode
    assert res["error"]["message"].startswith("unauthorized: gateway password missing")
    accepted = await open_probe(gateway)
    assert (await accepted.hello(token=None, auth={"password": "pw-1"}))["ok"] is True


async def test_protocol_mismatch_closes_with_1002(state_dir, start_ws, open_probe):
    gateway = await start_ws(make_config(state_dir))
    probe = await open_probe(gateway)
    res = await probe.hello(minProtocol=4, maxProtocol=5)
    assert res["error"] == {
        "code": "INVALID_REQUEST",
        "message": "protocol mismatch",
        "details": {"expectedProtocol": 3},
    }
    assert await probe.closed() == (1002, "protocol mismatch")


async def test_first_frame_must_be_connect(state_dir, start_ws, open_probe):
    gateway = await start_ws(make_config(state_dir))
    probe = await open_probe(gateway)
    await probe.frame()  # challenge
    res = await probe.request("health")
    assert res["ok"] is False
    assert res["error"]["message"] == "invalid handshake: first request must be connect"
    assert (await probe.closed())[0] == 1008


async def test_first_frame_not_json_closes_with_1008(state_dir, start_ws, open_probe):
    gateway = await start_ws(make_config(state_dir))
    probe = await open_probe(gateway)
    await probe.frame()
    await probe.send("this is not json")
    assert await probe.closed() == (1008, "invalid JSON")


async def test_first_frame_not_a_request_closes_with_1008(state_dir, start_ws, open_probe):
    gateway = await start_ws(make_config(state_dir))
    probe = await open_probe(gateway)
    await probe.frame()
    await probe.send({"type": "req", "id": "x"})
    assert await probe.closed() == (1008, "invalid request frame")


async def test_invalid_connect_params_name_every_problem(state_dir, start_ws, open_probe):
    gateway = await start_ws(make_config(state_dir))
    probe = await open_probe(gateway)
    client = {"id": "bogus", "version": "1", "mode": "test"}
    res = await probe.hello(client=client, extra=True)
    assert res["error"]["message"] == (
        "invalid connect params: at /client/id: must be equal to one of the allowed values; "
        "at /client: must have required property 'platform'; "
        "at root: unexpected property 'extra'"
    )
    assert (await probe.closed())[0] == 1008


async def test_node_role_is_refused(state_dir, start_ws, open_probe):
    gateway = await start_ws(make_config(state_dir))
    probe = await open_probe(gateway)
    res = await probe.hello(role="node")
    assert res["error"]["message"] == "node role is not supported"


async def test_handshake_timeout_closes_with_1008(state_dir, start_ws, open_probe):
    gateway = await start_ws(make_config(state_dir), WsOptions(handshake_timeout=0.1))
    probe = await open_probe(gateway)
    await probe.frame()  # the challenge, then silence
    assert await probe.closed() == (1008, "handshake timeout")


async def test_oversized_frame_before_hello_closes_with_1009(state_dir, start_ws, open_probe):
    gateway = await start_ws(make_config(state_dir))
    probe = await open_probe(gateway)
    await probe.frame()
    params = connect_params(padding="x" * (65 * 1024))
    await probe.send({"type": "req", "id": "c1", "method": "connect", "params": params})
    assert (await probe.closed())[0] == 1009


async def test_failed_handshakes_count_toward_the_auth_rate_limit(
    state_dir, start_ws, open_probe, http
):
    limit = RateLimitConfig(max_attempts=3, exempt_loopback=False)
    gateway = await start_ws(make_config(state_dir, rate_limit=limit))
    for _ in range(3):
        probe = await open_probe(gateway)
        assert (await probe.hello(token="wrong"))["ok"] is False
    locked = await open_probe(gateway)
    res = await locked.hello(token=TOKEN)  # even the right token: locked out
    error = res["error"]
    assert error["code"] == "INVALID_REQUEST"
    assert error["message"].startswith("unauthorized: too many failed authentication attempts")
    assert error["retryable"] is True and error["retryAfterMs"] > 0
    assert error["details"] == {"code": "AUTH_RATE_LIMITED"}
    assert (await locked.closed())[0] == 1008
    # One limiter for the whole gateway: HTTP from the same address is locked out too.
    async with http.get(gateway.url + "/v1/models", headers=gateway.headers()) as response:
        assert response.status == 429


async def test_scopes_limit_what_a_client_may_call(state_dir, start_ws, open_probe):
    gateway = await start_ws(make_config(state_dir))
    probe = await open_probe(gateway)
    assert (await probe.hello(scopes=["operator.read"]))["ok"] is True
    assert (await probe.request("health"))["ok"] is True
    res = await probe.request("chat.send", {"sessionKey": "main", "message": "hi"})
    assert res["error"]["message"] == "missing scope: operator.write"
    res = await probe.request("no.such.method")
    assert res["error"]["message"] == "missing scope: operator.admin"


async def test_plain_get_without_upgrade_answers_426(state_dir, start_ws, http):
    gateway = await start_ws(make_config(state_dir))
    async with http.get(gateway.url + "/") as response:
        assert response.status == 426
        body = await response.json()
    assert body["error"]["type"] == "upgrade_required"
