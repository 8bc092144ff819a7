"""The gateway foundation through a real server: health, auth, rate limit, proxies, gating."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import aiohttp
import pytest

from moltbot import __version__
from moltbot.config.model import RateLimitConfig
from moltbot.gateway.auth import MAX_TRACKED_CLIENTS, FailureLimiter
from moltbot.gateway.server import StartupError, check_startup
from tests.conftest import TOKEN, StartGateway, make_config


async def test_healthz_needs_no_auth_and_tells_only_status_and_version(
    start_gateway: StartGateway, state_dir: Path
) -> None:
    gateway = await start_gateway(make_config(state_dir))
    async with aiohttp.ClientSession() as http, http.get(f"{gateway.url}/healthz") as resp:
        assert resp.status == 200
        assert await resp.json() == {"status": "ok", "version": __version__}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": "Bearer "},
    ],
    ids=["missing", "wrong", "not-bearer", "empty"],
)
async def test_missing_or_wrong_secret_is_401_openai_json(
    start_gateway: StartGateway, state_dir: Path, headers: dict[str, str]
) -> None:
    gateway = await start_gateway(make_config(state_dir))
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{gateway.url}/v1/models", headers=headers) as resp:
            assert resp.status == 401
            body = await resp.json()
        assert body["error"]["type"] == "unauthorized"
        assert set(body["error"]) == {"message", "type", "param", "code"}
        async with http.get(f"{gateway.url}/v1/models", headers=gateway.headers()) as resp:
            assert resp.status == 200


async def test_password_mode_accepts_the_password_as_bearer(
    start_gateway: StartGateway, state_dir: Path
) -> None:
    config = make_config(state_dir, token=None)
    auth = config.gateway.auth.__class__(mode="password", password="pw-123")
    config = _with_gateway(config, auth=auth)
    gateway = await start_gateway(config)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{gateway.url}/v1/models", headers=gateway.headers("pw-123")) as r:
            assert r.status == 200
        async with http.get(f"{gateway.url}/v1/models", headers=gateway.headers(TOKEN)) as r:
            assert r.status == 401


async def test_failed_attempts_lock_the_client_out_with_retry_after(
    start_gateway: StartGateway, state_dir: Path
) -> None:
    limit = RateLimitConfig(
        max_attempts=3, window_ms=60_000, lockout_ms=120_000, exempt_loopback=False
    )
    gateway = await start_gateway(make_config(state_dir, rate_limit=limit))
    url = f"{gateway.url}/v1/models"
    async with aiohttp.ClientSession() as http:
        for _ in range(3):
            async with http.get(url, headers=gateway.headers("bad")) as resp:
                assert resp.status == 401
        async with http.get(url, headers=gateway.headers()) as resp:
            assert resp.status == 429  # even the right secret waits out the lockout
            assert 110 <= int(resp.headers["Retry-After"]) <= 120
            assert (await resp.json())["error"]["type"] == "rate_limit_error"


async def test_loopback_is_exempt_by_default(start_gateway: StartGateway, state_dir: Path) -> None:
    gateway = await start_gateway(make_config(state_dir))
    async with aiohttp.ClientSession() as http:
        for _ in range(15):
            async with http.get(f"{gateway.url}/v1/models", headers=gateway.headers("x")) as r:
                assert r.status == 401
        async with http.get(f"{gateway.url}/v1/models", headers=gateway.headers()) as r:
            assert r.status == 200


async def test_forwarded_for_is_believed_only_from_trusted_proxies(
    start_gateway: StartGateway, state_dir: Path
) -> None:
    limit = RateLimitConfig(max_attempts=2, exempt_loopback=False)
    trusted = await start_gateway(
        make_config(state_dir, rate_limit=limit, trusted_proxies=("127.0.0.1",))
    )
    untrusted = await start_gateway(make_config(state_dir / "u", rate_limit=limit))

    async def status(gateway_url: str, client: str, token: str) -> int:
        headers = {"Authorization": f"Bearer {token}", "X-Forwarded-For": client}
        async with http.get(f"{gateway_url}/v1/models", headers=headers) as resp:
            return resp.status

    async with aiohttp.ClientSession() as http:
        # Through a trusted proxy each forwarded client has its own count.
        assert [await status(trusted.url, "203.0.113.5", "bad") for _ in range(2)] == [401, 401]
        assert await status(trusted.url, "203.0.113.5", TOKEN) == 429
        assert await status(trusted.url, "198.51.100.7", TOKEN) == 200
        # From anyone else the header is ignored: the peer address is what counts.
        assert await status(untrusted.url, "203.0.113.5", "bad") == 401
        assert await status(untrusted.url, "198.51.100.7", "bad") == 401
        assert await status(untrusted.url, "192.0.2.1", TOKEN) == 429


async def test_http_api_is_404_when_disabled_and_405_for_wrong_method(
    start_gateway: StartGateway, state_dir: Path
) -> None:
    disabled = await start_gateway(make_config(state_dir, chat=False))
    enabled = await start_gateway(make_config(state_dir / "e"))
    async with aiohttp.ClientSession() as http:
        for path in ("/v1/chat/completions", "/v1/models"):
            async with http.post(f"{disabled.url}{path}", headers=disabled.headers()) as resp:
                assert resp.status == 404
                assert "error" in await resp.json()
        url = f"{enabled.url}/v1/chat/completions"
        async with http.get(url, headers=enabled.headers()) as resp:
            assert resp.status == 405
            assert resp.headers["Allow"] == "POST"
            assert (await resp.json())["error"]["type"] == "invalid_request_error"


def test_non_loopback_bind_without_a_secret_refuses_to_start(state_dir: Path) -> None:
    config = _with_gateway(make_config(state_dir, token=None), bind="lan")
    with pytest.raises(StartupError, match=r"refusing to bind 0\.0\.0\.0"):
        check_startup(config)
    check_startup(_with_gateway(make_config(state_dir), bind="lan"))  # with a token: fine


def test_secrets_shorter_than_the_minimum_refuse_to_start(state_dir: Path) -> None:
    check_startup(make_config(state_dir, token="x" * 16))
    with pytest.raises(StartupError, match=r"gateway\.auth\.token is too short.*16"):
        check_startup(make_config(state_dir, token="x" * 15))
    config = make_config(state_dir, token=None)
    password = dataclasses.replace(config.gateway.auth, mode="password", password="x" * 12)
    check_startup(_with_gateway(config, auth=password))
    short = dataclasses.replace(password, password="x" * 11)
    with pytest.raises(StartupError, match=r"gateway\.auth\.password is too short.*12"):
        check_startup(_with_gateway(config, auth=short))


def _with_gateway(config, **changes):
    return dataclasses.replace(config, gateway=dataclasses.replace(config.gateway, **changes))


async def test_loopback_through_an_untrusted_proxy_is_not_exempt(
    start_gateway: StartGateway, state_dir: Path
) -> None:
    """A reverse proxy on this host that is not in trustedProxies makes every client look
    like 127.0.0.1; such requests must not share the loopback exemption."""
    limit = RateLimitConfig(max_attempts=3, exempt_loopback=True)
    gateway = await start_gateway(make_config(state_dir, rate_limit=limit))
    proxied = {"X-Forwarded-For": "203.0.113.9"}
    async with aiohttp.ClientSession() as http:
        for _ in range(3):
            headers = gateway.headers("bad", **proxied)
            async with http.get(f"{gateway.url}/v1/models", headers=headers) as resp:
                assert resp.status == 401
        async with http.get(f"{gateway.url}/v1/models", headers=gateway.headers(**proxied)) as resp:
            assert resp.status == 429
        async with http.get(f"{gateway.url}/v1/models", headers=gateway.headers()) as resp:
            assert resp.status == 200  # a direct local client is still exempt


def test_the_limiter_remembers_a_bounded_number_of_clients() -> None:
    limiter = FailureLimiter(RateLimitConfig(max_attempts=1, lockout_ms=60_000))
    for i in range(MAX_TRACKED_CLIENTS + 500):
        limiter.record_failure(f"2001:db8:{i:x}::1")  # each in a /64 of its own
    assert len(limiter._clients) == MAX_TRACKED_CLIENTS
    assert limiter.retry_after(f"2001:db8:{MAX_TRACKED_CLIENTS + 499:x}::1") is not None
