"""The handshake: challenge, connect, hello-ok, and every way it can fail."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from moltbot.config.model import ControlUiConfig, RateLimitConfig
from moltbot.gateway.auth import Authenticator
from moltbot.gateway.state import AUTH_KEY, CONFIG_KEY
from moltbot.gateway.ws import HUB_KEY, WsOptions
from moltbot.gateway.ws.methods import METHODS
from moltbot.gateway.ws.options import MAX_PENDING_HANDSHAKES_PER_IP
from tests.conftest import TOKEN, make_config
from tests.gateway.ws.wsutil import WAIT, Probe, connect_params, wait_for


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


@pytest.mark.parametrize(
    ("path", "ui"),
    [("/ws", True), ("/", False)],
    ids=["ws-path", "root-without-the-web-page"],
)
async def test_plain_get_without_upgrade_answers_426(state_dir, start_ws, http, path, ui):
    """`/` serves the web chat page to plain GETs unless it is disabled; `/ws` never does."""
    config = make_config(state_dir, control_ui=ControlUiConfig(enabled=ui))
    gateway = await start_ws(config)
    async with http.get(gateway.url + path) as response:
        assert response.status == 426
        body = await response.json()
    assert body["error"]["type"] == "upgrade_required"


# -- every failed handshake counts toward the auth rate limit -----------------------------------

Breaker = Callable[[Probe], Awaitable[None]]


async def send_garbage(probe: Probe) -> None:
    await probe.frame()
    await probe.send("this is not json")


async def send_health_first(probe: Probe) -> None:
    await probe.frame()
    await probe.request("health")


async def send_a_non_request(probe: Probe) -> None:
    await probe.frame()
    await probe.send({"type": "req", "id": "x"})


async def send_bad_params(probe: Probe) -> None:
    await probe.hello(client={"id": "bogus"})


async def send_wrong_protocol(probe: Probe) -> None:
    await probe.hello(minProtocol=4, maxProtocol=5)


async def send_node_role(probe: Probe) -> None:
    await probe.hello(role="node")


async def send_nothing(probe: Probe) -> None:
    await probe.frame()  # and wait for the handshake timeout


async def send_too_much_for_preauth(probe: Probe) -> None:
    await probe.frame()
    params = connect_params(padding="x" * (65 * 1024))
    await probe.send({"type": "req", "id": "c1", "method": "connect", "params": params})


async def send_more_than_max_payload(probe: Probe) -> None:
    await probe.frame()
    await probe.send("x" * (SMALL_MAX_PAYLOAD + 1))


async def send_wrong_token(probe: Probe) -> None:
    await probe.hello(token="wrong")


SMALL_MAX_PAYLOAD = 128 * 1024
BREAKERS: list[tuple[Breaker, WsOptions]] = [
    (send_garbage, WsOptions()),
    (send_health_first, WsOptions()),
    (send_a_non_request, WsOptions()),
    (send_bad_params, WsOptions()),
    (send_wrong_protocol, WsOptions()),
    (send_node_role, WsOptions()),
    (send_nothing, WsOptions(handshake_timeout=0.2)),
    (send_too_much_for_preauth, WsOptions()),
    (send_more_than_max_payload, WsOptions(max_payload=SMALL_MAX_PAYLOAD)),
    (send_wrong_token, WsOptions()),
]


async def assert_locked_out(probe: Probe) -> None:
    res = await probe.hello(token=TOKEN)  # even the right token
    error = res["error"]
    assert error["code"] == "INVALID_REQUEST"
    assert error["message"].startswith("unauthorized: too many failed authentication attempts")
    assert error["retryable"] is True and error["retryAfterMs"] > 0
    assert (await probe.closed())[0] == 1008


@pytest.mark.parametrize(("breaker", "options"), BREAKERS, ids=[b.__name__ for b, _ in BREAKERS])
async def test_every_kind_of_failed_handshake_counts(
    state_dir, start_ws, open_probe, breaker: Breaker, options: WsOptions
):
    limit = RateLimitConfig(max_attempts=1, exempt_loopback=False)
    gateway = await start_ws(make_config(state_dir, rate_limit=limit), options)
    broken = await open_probe(gateway)
    await breaker(broken)
    await broken.closed()
    await assert_locked_out(await open_probe(gateway))


async def test_three_broken_handshakes_then_a_good_one_is_rate_limited(
    state_dir, start_ws, open_probe
):
    limit = RateLimitConfig(max_attempts=3, exempt_loopback=False)
    gateway = await start_ws(make_config(state_dir, rate_limit=limit))
    for breaker in (send_garbage, send_health_first, send_wrong_protocol):
        broken = await open_probe(gateway)
        await breaker(broken)
        await broken.closed()
    await assert_locked_out(await open_probe(gateway))


async def test_clients_behind_an_untrusted_local_proxy_are_not_exempt(
    state_dir, start_ws, open_probe
):
    """Loopback is exempt from the limit only for clients that connect directly: a proxy on
    this host we do not trust would otherwise exempt everyone behind it."""
    limit = RateLimitConfig(max_attempts=1)  # loopback exempt
    gateway = await start_ws(make_config(state_dir, rate_limit=limit))
    proxied = {"X-Forwarded-For": "203.0.113.7"}
    await send_wrong_token(await open_probe(gateway, headers=proxied))
    await assert_locked_out(await open_probe(gateway, headers=proxied))
    assert (await (await open_probe(gateway)).hello())["ok"] is True  # direct: still exempt


# -- pending handshakes are bounded -------------------------------------------------------------


async def assert_evicted(probe: Probe) -> None:
    assert await probe.closed() == (1013, "try again later")


async def test_at_the_per_address_cap_the_oldest_pending_handshake_makes_room(
    state_dir, start_ws, open_probe
):
    options = WsOptions(max_pending_handshakes_per_ip=2)
    gateway = await start_ws(make_config(state_dir), options)
    hub = gateway.app[HUB_KEY]
    first, second = await open_probe(gateway), await open_probe(gateway)
    for probe in (first, second):
        await probe.frame()  # challenge: admitted, now pending
    third = await open_probe(gateway)
    assert (await third.hello())["ok"] is True  # the newcomer gets in
    await assert_evicted(first)  # the oldest made room
    assert (await second.request("connect", connect_params()))["ok"] is True
    assert len(hub.connections) == 2 and len(hub.handshakes) == 0


async def test_at_the_total_cap_the_oldest_pending_handshake_makes_room(
    state_dir, start_ws, open_probe
):
    # Trusting the local proxy lets each probe claim its own address.
    config = make_config(state_dir, trusted_proxies=("127.0.0.1",))
    gateway = await start_ws(config, WsOptions(max_pending_handshakes=2))
    probes = []
    for n in (1, 2, 3):
        probe = await open_probe(gateway, headers={"X-Forwarded-For": f"198.51.100.{n}"})
        await probe.frame()
        probes.append(probe)
    await assert_evicted(probes[0])
    for probe in probes[1:]:
        assert (await probe.request("connect", connect_params()))["ok"] is True


async def test_a_flood_of_silent_sockets_locks_no_one_out(state_dir, start_ws):
    """256 sockets from this address that never send `connect` (the issue's flood, default
    caps): a real client still gets in, and being pushed out for capacity is not a failed
    login, so with exemptLoopback false the real client with the right token is not locked
    out."""
    limit = RateLimitConfig(max_attempts=1, exempt_loopback=False)
    gateway = await start_ws(make_config(state_dir, rate_limit=limit))
    hub = gateway.app[HUB_KEY]
    connector = aiohttp.TCPConnector(limit=0)  # the default pool holds 100 sockets
    async with aiohttp.ClientSession(connector=connector) as http:
        silent = [Probe(await http.ws_connect(gateway.ws_url)) for _ in range(256)]
        assert len(hub.handshakes) == MAX_PENDING_HANDSHAKES_PER_IP
        real = Probe(await http.ws_connect(gateway.ws_url))
        assert (await real.hello())["ok"] is True
        closes = await asyncio.gather(*(probe.closed() for probe in silent[:-16]))
        assert set(closes) == {(1013, "try again later")}
        assert gateway.app[AUTH_KEY].limiter.retry_after("127.0.0.1") is None
        again = Probe(await http.ws_connect(gateway.ws_url))
        assert (await again.hello())["ok"] is True
        # The evicted sockets are gone at once, not after the close timeout.
        await wait_for(lambda: len(gateway.runner.guard) <= 16 + 2, timeout=2)
        for probe in [*silent, real, again]:
            await probe.ws.close()


# -- the handshake and the graceful stop --------------------------------------------------------


class StopOnCheck(Authenticator):
    """The stop begins while a handshake is being checked."""

    def __init__(self, app: web.Application) -> None:
        super().__init__(app[CONFIG_KEY].gateway.auth)
        self._hub = app[HUB_KEY]

    def check(self, presented: str | None, ip: str, *, exemptable: bool = True) -> None:
        self._hub.shutdown()
        super().check(presented, ip, exemptable=exemptable)


async def test_a_handshake_ending_after_the_stop_began_is_told_at_once(
    state_dir, start_ws, open_probe
):
    def stop_on_check(app: web.Application) -> None:
        app[AUTH_KEY] = StopOnCheck(app)

    gateway = await start_ws(make_config(state_dir), customize=stop_on_check)
    late = await open_probe(gateway)
    await late.frame()  # challenge
    await late.send({"type": "req", "id": "c1", "method": "connect", "params": connect_params()})
    shutdown = await late.frame()
    assert (shutdown["event"], shutdown["payload"]) == ("shutdown", {"reason": "gateway stopping"})
    assert await late.closed() == (1012, "service restart")
    assert not gateway.app[HUB_KEY].connections


async def test_the_stop_says_goodbye_to_sockets_still_in_their_handshake(
    state_dir, start_ws, open_probe
):
    gateway = await start_ws(make_config(state_dir), WsOptions(handshake_timeout=30))
    pending = await open_probe(gateway)
    await pending.frame()  # challenge, then the stop
    stopping = asyncio.create_task(gateway.stop())
    shutdown = await pending.frame()
    assert shutdown["event"] == "shutdown"
    assert await pending.closed() == (1012, "service restart")
    async with asyncio.timeout(WAIT):  # not held up until the handshake timeout
        await stopping
