"""Web pages in the user's browser, through the real server: Origin on WebSocket upgrades and
HTTP requests, the Host header against DNS rebinding, and rate limits for pages on loopback."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from moltbot.config.model import Config, GatewayConfig, RateLimitConfig
from moltbot.gateway.origins import MAX_REMEMBERED_HOSTS, BrowserPolicy
from moltbot.gateway.state import AUTH_KEY
from tests.conftest import TOKEN, Gateway, StartGateway, make_config
from tests.gateway.raw import connect, request_head
from tests.gateway.ws.wsutil import Probe, connect_params

EVIL = "http://evil.example"


def port(gateway: Gateway) -> int:
    return int(gateway.url.rsplit(":", 1)[1])


def with_gateway(config: Config, **changes: object) -> Config:
    return dataclasses.replace(config, gateway=dataclasses.replace(config.gateway, **changes))


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def upgrade(
    http: aiohttp.ClientSession, gateway: Gateway, **headers: str
) -> aiohttp.ClientWebSocketResponse:
    return await http.ws_connect(gateway.ws_url, headers=headers)


async def refused_upgrade(gateway: Gateway, **headers: str) -> tuple[int, dict]:
    """The status and JSON body of an upgrade the gateway refuses."""
    async with aiohttp.ClientSession() as http:
        async with http.get(
            gateway.url,
            headers={
                "Connection": "Upgrade",
                "Upgrade": "websocket",
                "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                **headers,
            },
        ) as resp:
            assert resp.headers["Content-Type"].startswith("application/json")
            return resp.status, await resp.json()


async def get(gateway: Gateway, path: str, **headers: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as http, http.get(gateway.url + path, headers=headers) as r:
        return r.status, await r.json()


# -- Origin -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "origin",
    [EVIL, "null", "http://127.0.0.1", "http://127.0.0.1:1", "https://evil.example:443"],
)
async def test_a_websocket_upgrade_from_a_foreign_origin_is_refused_with_403(
    start_gateway: StartGateway, state_dir: Path, http: aiohttp.ClientSession, origin: str
) -> None:
    gateway = await start_gateway(make_config(state_dir))
    status, body = await refused_upgrade(gateway, Origin=origin)
    assert status == 403
    assert body["error"]["type"] == "permission_error"
    assert body["error"]["code"] == "origin_not_allowed"
    assert origin in body["error"]["message"]
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:  # a real client's view
        await upgrade(http, gateway, Origin=origin)
    assert refused.value.status == 403


async def test_the_gateways_own_origins_may_upgrade(
    start_gateway: StartGateway, state_dir: Path, http: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway(make_config(state_dir))
    for host in ("127.0.0.1", "localhost", "LOCALHOST", "[::1]"):
        hostport = f"{host}:{port(gateway)}"
        for scheme in ("http", "https"):  # https: behind a TLS proxy on this host
            ws = await upgrade(http, gateway, Host=hostport, Origin=f"{scheme}://{hostport}")
            probe = Probe(ws)
            assert (await probe.hello())["ok"] is True
            await ws.close()


async def test_configured_origins_may_upgrade_and_call_http(
    start_gateway: StartGateway, state_dir: Path, http: aiohttp.ClientSession
) -> None:
    config = make_config(state_dir, allowed_origins=("https://chat.example.com",))
    gateway = await start_gateway(config)
    ws = await upgrade(http, gateway, Origin="https://chat.example.com")
    assert (await Probe(ws).hello())["ok"] is True
    await ws.close()
    status, _ = await get(
        gateway, "/v1/models", Origin="https://chat.example.com", Authorization=f"Bearer {TOKEN}"
    )
    assert status == 200
    assert (await refused_upgrade(gateway, Origin="https://other.example.com"))[0] == 403


async def test_http_requests_with_a_foreign_origin_get_403_and_without_one_pass(
    start_gateway: StartGateway, state_dir: Path
) -> None:
    gateway = await start_gateway(make_config(state_dir))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for path in ("/healthz", "/v1/models"):
        status, body = await get(gateway, path, Origin=EVIL, **auth)
        assert status == 403 and body["error"]["code"] == "origin_not_allowed"
        assert set(body["error"]) == {"message", "type", "param", "code"}
        assert (await get(gateway, path, **auth))[0] == 200  # CLI, SDKs, curl: no Origin
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{gateway.url}/v1/chat/completions",
            headers={**auth, "Origin": EVIL},
            json={"model": "moltbot", "messages": [{"role": "user", "content": "hi"}]},
        ) as resp:
            assert resp.status == 403


async def test_a_foreign_page_gets_no_guesses_and_an_allowed_one_is_rate_limited_on_loopback(
    start_gateway: StartGateway, state_dir: Path, http: aiohttp.ClientSession
) -> None:
    """The issue's attack: a page made unlimited guesses because loopback was exempt. A foreign
    origin is refused before auth (no guess, nothing counted); a page the gateway allows is
    limited even from 127.0.0.1, while the CLI (no Origin) keeps the loopback exemption."""
    limit = RateLimitConfig(max_attempts=3)  # exemptLoopback: true, the default
    config = make_config(state_dir, rate_limit=limit, allowed_origins=("http://localhost:3000",))
    gateway = await start_gateway(config)
    page = {"Origin": "http://localhost:3000"}
    for _ in range(20):
        status, _ = await get(gateway, "/v1/models", Origin=EVIL, Authorization="Bearer guess")
        assert status == 403
    assert gateway.app[AUTH_KEY].limiter.retry_after("127.0.0.1") is None
    for _ in range(3):
        status, _ = await get(gateway, "/v1/models", Authorization="Bearer guess", **page)
        assert status == 401
    status, body = await get(gateway, "/v1/models", Authorization=f"Bearer {TOKEN}", **page)
    assert status == 429 and body["error"]["type"] == "rate_limit_error"
    # Over WebSocket too: the page's handshake is refused as rate limited.
    ws = await upgrade(http, gateway, **page)
    res = await Probe(ws).hello()
    assert res["error"]["details"] == {"code": "AUTH_RATE_LIMITED"}
    await ws.close()
    # The CLI on the same machine is still exempt.
    assert (await get(gateway, "/v1/models", Authorization=f"Bearer {TOKEN}"))[0] == 200


async def test_a_page_guessing_over_websocket_is_locked_out(
    start_gateway: StartGateway, state_dir: Path, http: aiohttp.ClientSession
) -> None:
    limit = RateLimitConfig(max_attempts=2)
    gateway = await start_gateway(make_config(state_dir, rate_limit=limit))
    own = {"Origin": gateway.url}  # a page served from the gateway's own origin
    for _ in range(2):
        ws = await upgrade(http, gateway, **own)
        assert (await Probe(ws).request("connect", connect_params("guess")))["ok"] is False
        await ws.close()
    ws = await upgrade(http, gateway, **own)
    probe = Probe(ws)
    assert (await probe.hello())["error"]["details"] == {"code": "AUTH_RATE_LIMITED"}
    await ws.close()


# -- Host -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:18789", "127.0.0.1.evil.example", "::1", "localhost."]
)
async def test_a_rebound_host_name_gets_421_on_every_path(
    start_gateway: StartGateway, state_dir: Path, host: str
) -> None:
    gateway = await start_gateway(make_config(state_dir))
    for path in ("/healthz", "/v1/models"):
        status, body = await get(gateway, path, Host=host, Authorization=f"Bearer {TOKEN}")
        assert status == 421
        assert body["error"]["code"] == "host_not_allowed"
        assert "gateway.allowedHosts" in body["error"]["message"]
    # The rebound page's upgrade carries its own origin: refused for the Host first.
    status, body = await refused_upgrade(gateway, Host=host, Origin=f"http://{host}")
    assert status == 421


async def test_loopback_names_on_any_port_and_configured_hosts_are_accepted(
    start_gateway: StartGateway, state_dir: Path
) -> None:
    gateway = await start_gateway(make_config(state_dir, allowed_hosts=("gateway.example.com",)))
    for host in (
        "127.0.0.1",
        f"127.0.0.1:{port(gateway)}",
        "localhost:9",
        "LocalHost",
        "[::1]:80",
        "[::1]",
        "gateway.example.com",
        "Gateway.Example.com:443",
    ):
        assert (await get(gateway, "/healthz", Host=host))[0] == 200, host


async def test_a_request_without_host_passes(start_gateway: StartGateway, state_dir: Path) -> None:
    """HTTP/1.0 tools may omit Host; a browser never does, so nothing can be rebound."""
    gateway = await start_gateway(make_config(state_dir))
    conn = await connect(gateway)
    await conn.send(b"GET /healthz HTTP/1.0\r\n\r\n")
    assert (await conn.response()).status == 200
    conn.close()


async def test_the_host_is_not_checked_when_bound_beyond_loopback(
    start_gateway: StartGateway, state_dir: Path
) -> None:
    """On a LAN bind the gateway cannot know every name it is reached by; Origin still holds."""
    config = with_gateway(make_config(state_dir), bind="lan")
    gateway = await start_gateway(config)
    assert (await get(gateway, "/healthz", Host="myserver.lan:18789"))[0] == 200
    assert (await get(gateway, "/healthz", Host="myserver.lan", Origin=EVIL))[0] == 403
    # ...and a page under an unlisted name is not "the gateway's own origin" either.
    rebound = {"Host": "rebound.example", "Origin": "http://rebound.example"}
    assert (await get(gateway, "/healthz", **rebound))[0] == 403
    lan_with_hosts = with_gateway(config, allowed_hosts=("myserver.lan",))
    strict = await start_gateway(dataclasses.replace(lan_with_hosts, state_dir=state_dir / "s"))
    assert (await get(strict, "/healthz", Host="myserver.lan"))[0] == 200
    assert (await get(strict, "/healthz", Host="other.lan"))[0] == 421


async def test_a_raw_request_with_a_bad_host_gets_the_envelope(
    start_gateway: StartGateway, state_dir: Path
) -> None:
    gateway = await start_gateway(make_config(state_dir))
    conn = await connect(gateway)
    await conn.send(request_head(host="evil.example"))
    response = await conn.response()
    assert response.status == 421 and response.error["type"] == "invalid_request_error"
    conn.close()


def test_remembered_hosts_are_bounded_and_still_checked_for_the_origin_rule() -> None:
    policy = BrowserPolicy(GatewayConfig())
    for port_number in range(MAX_REMEMBERED_HOSTS + 50):
        assert policy.refusal(f"localhost:{port_number}", None) is None
    assert len(policy._accepted) == MAX_REMEMBERED_HOSTS
    assert policy.refusal("evil.example", None) is not None  # refusals are never remembered
    assert policy.refusal("evil.example", None) is not None
    lan = BrowserPolicy(GatewayConfig(bind="lan"))  # Host unchecked, but not own origin
    assert lan.refusal("rebound.example", "http://rebound.example") is not None
    assert lan.refusal("localhost:1", "http://localhost:1") is None
    # The web chat page opened by address: its own origin (no DNS name to rebind).
    assert lan.refusal("192.168.1.5:18789", "http://192.168.1.5:18789") is None
    assert lan.refusal("[fe80::1]:18789", "http://[fe80::1]:18789") is None
    assert lan.refusal("192.168.1.5:18789", "http://192.168.1.6:18789") is not None
