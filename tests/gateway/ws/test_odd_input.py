"""Odd input is refused, never a crash: huge integers, lone surrogates, JSON nested too deep.
And should the handler fail anyway, the socket closes with 1011 instead of getting an HTTP 500
written onto it."""

from __future__ import annotations

import json

import pytest
from aiohttp import web

from moltbot.gateway.auth import Authenticator
from moltbot.gateway.state import AUTH_KEY
from moltbot.gateway.ws import HUB_KEY
from moltbot.gateway.ws.protocol import close_reason, encode, event_frame
from tests.conftest import make_config
from tests.gateway.ws.wsutil import connect_params, wait_for

HUGE = 10**400  # valid JSON; no float (nor SQLite integer) can hold it
MAX_SAFE = 2**53 - 1
LONE = "\ud800"  # json.dumps sends it as the escape "\ud800": valid JSON, not valid Unicode
NOT_UNICODE = "must be valid Unicode (no lone surrogates)"
DEEP = "[" * 5000  # parses into a RecursionError, well under the pre-auth size limit


def invalid(method: str, problem: str) -> dict[str, str]:
    return {"code": "INVALID_REQUEST", "message": f"invalid {method} params: {problem}"}


# -- before the handshake ---------------------------------------------------------------------


async def test_a_huge_integer_in_connect_is_an_invalid_request(state_dir, start_ws, open_probe):
    probe = await open_probe(await start_ws(make_config(state_dir)))
    res = await probe.hello(minProtocol=HUGE)
    assert res["error"] == invalid("connect", f"at /minProtocol: must be <= {MAX_SAFE}")
    assert (await probe.closed())[0] == 1008


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"auth": {"token": "secret" + LONE}}, f"at /auth/token: {NOT_UNICODE}"),
        ({"locale": LONE}, f"at /locale: {NOT_UNICODE}"),
        ({"caps": ["ok", LONE]}, f"at /caps/1: {NOT_UNICODE}"),
        ({LONE: 1}, "at root: unexpected property '\\ud800'"),  # named, escaped
    ],
)
async def test_lone_surrogates_in_connect_are_an_invalid_request(
    state_dir, start_ws, open_probe, overrides, problem
):
    probe = await open_probe(await start_ws(make_config(state_dir)))
    res = await probe.hello(**overrides)
    assert res["error"] == invalid("connect", problem)
    assert (await probe.closed())[0] == 1008


async def test_json_nested_too_deep_before_hello_is_invalid_json(state_dir, start_ws, open_probe):
    probe = await open_probe(await start_ws(make_config(state_dir)))
    await probe.frame()  # challenge
    await probe.send(DEEP)
    assert await probe.closed() == (1008, "invalid JSON")


# -- after the handshake ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "params", "problem"),
    [
        ("chat.history", {"sessionKey": "main", "limit": HUGE}, "at /limit: must be <= 1000"),
        ("agent.wait", {"runId": "r", "timeoutMs": HUGE}, f"at /timeoutMs: must be <= {MAX_SAFE}"),
        ("agent.wait", {"runId": "r", "timeoutMs": -HUGE}, "at /timeoutMs: must be >= 0"),
        (
            "agent",
            {"message": "hi", "idempotencyKey": "k", "timeout": HUGE},
            f"at /timeout: must be <= {MAX_SAFE}",
        ),
        (
            "chat.send",
            {"sessionKey": "main", "message": "hi", "idempotencyKey": "k", "timeoutMs": HUGE},
            f"at /timeoutMs: must be <= {MAX_SAFE}",
        ),
        ("sessions.list", {"activeMinutes": HUGE}, f"at /activeMinutes: must be <= {MAX_SAFE}"),
        (
            "sessions.preview",
            {"keys": ["main"], "limit": -HUGE},
            f"at /limit: must be >= {-MAX_SAFE}",
        ),
        ("chat.history", {"sessionKey": "main" + LONE}, f"at /sessionKey: {NOT_UNICODE}"),
        (
            "chat.send",
            {"sessionKey": "main", "message": "hi " + LONE, "idempotencyKey": "k"},
            f"at /message: {NOT_UNICODE}",
        ),
        (
            "agent",
            {"message": "hi", "idempotencyKey": LONE},
            f"at /idempotencyKey: {NOT_UNICODE}",
        ),
        ("sessions.preview", {"keys": ["main", LONE]}, f"at /keys/1: {NOT_UNICODE}"),
        ("sessions.reset", {"key": LONE}, f"at /key: {NOT_UNICODE}"),
        ("health", {LONE: True}, "at root: unexpected property '\\ud800'"),
    ],
)
async def test_odd_params_are_an_invalid_request(
    state_dir, start_ws, open_probe, method, params, problem
):
    gateway = await start_ws(make_config(state_dir))
    probe = await open_probe(gateway)
    assert (await probe.hello())["ok"]
    res = await probe.request(method, params)
    assert res["error"] == invalid(method, problem)
    assert (await probe.request("health"))["ok"] is True  # the socket carries on
    assert not gateway.runtime.active_runs()


async def test_non_finite_numbers_are_not_integers(state_dir, start_ws, open_probe):
    probe = await open_probe(await start_ws(make_config(state_dir)))
    assert (await probe.hello())["ok"]
    # Python's JSON reads these (1e400 overflows to inf); a strict parser would refuse them.
    for index, number in enumerate(["1e400", "-1e400", "Infinity", "NaN"]):
        params = f'{{"sessionKey":"main","limit":{number}}}'
        await probe.send(
            f'{{"type":"req","id":"n{index}","method":"chat.history","params":{params}}}'
        )
        res = await probe.response(f"n{index}")
        assert res["error"] == invalid("chat.history", "at /limit: must be integer")


async def test_the_largest_active_minutes_is_a_valid_window(state_dir, start_ws, open_client):
    client = await open_client(await start_ws(make_config(state_dir)))
    await client.request("sessions.reset", {"key": "main"})
    listed = await client.request("sessions.list", {"activeMinutes": MAX_SAFE})
    assert [row["key"] for row in listed["sessions"]] == ["agent:main:main"]


async def test_lone_surrogates_in_frame_ids_and_method_names_are_echoed_safely(
    state_dir, start_ws, open_probe
):
    probe = await open_probe(await start_ws(make_config(state_dir)))
    assert (await probe.hello())["ok"]
    await probe.send({"type": "req", "id": "id" + LONE, "method": "health"})
    res = await probe.response("id" + LONE)  # JSON escapes carry it back unchanged
    assert res["ok"] is True
    res = await probe.request("no.such" + LONE)
    assert res["error"]["message"] == "unknown method: no.such" + LONE
    assert (await probe.request("health"))["ok"] is True


# -- an unexpected error in the handler -------------------------------------------------------


class BrokenAuthenticator(Authenticator):
    """An auth backend with a bug: whatever it raises must not reach the HTTP layer."""

    def check(self, presented: str | None, ip: str, *, exemptable: bool = True) -> None:
        raise RuntimeError("auth backend bug")


async def test_an_unexpected_error_closes_with_1011(state_dir, start_ws, open_probe, http):
    config = make_config(state_dir)

    def break_auth(app: web.Application) -> None:
        app[AUTH_KEY] = BrokenAuthenticator(config.gateway.auth)

    gateway = await start_ws(config, customize=break_auth)
    probe = await open_probe(gateway)
    await probe.frame()  # challenge
    await probe.send({"type": "req", "id": "c1", "method": "connect", "params": connect_params()})
    # Not a corrupt frame or 1002 from an HTTP 500 written onto the socket.
    assert await probe.closed() == (1011, "internal error")
    hub = gateway.app[HUB_KEY]
    await wait_for(lambda: len(hub.handshakes) == 0)  # its pre-auth slot was given back
    assert not hub.connections
    async with http.get(gateway.url + "/healthz") as response:
        assert response.status == 200


def test_frames_with_lone_surrogates_still_encode() -> None:
    """Text from elsewhere (a model's output) may carry them: the frame goes out escaped."""
    data = encode(event_frame("agent", {"text": "a" + LONE + "é"}, 1))
    assert json.loads(data)["payload"] == {"text": "a" + LONE + "é"}
    assert close_reason("bad " + LONE) == "bad \\ud800"
