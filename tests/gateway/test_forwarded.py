"""Who the client is behind proxies: X-Forwarded-For read right to left through trusted proxies
only, no loopback exemption for forwarded addresses, and the socket address otherwise."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from moltbot.config.model import RateLimitConfig
from moltbot.gateway.auth import forwarded_client
from tests.conftest import TOKEN, Gateway, StartGateway, make_config

PROXY = "127.0.0.1"  # the test client plays the reverse proxy on this host


async def status(gateway: Gateway, token: str, *forwarded_for: str, **headers: str) -> int:
    pairs = [("Authorization", f"Bearer {token}")]
    pairs += [("X-Forwarded-For", value) for value in forwarded_for]
    pairs += list(headers.items())
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{gateway.url}/v1/models", headers=CIMultiDict(pairs)) as resp:
            return resp.status


async def test_without_trusted_proxies_rotating_the_header_does_not_escape_the_lockout(
    start_gateway: StartGateway, state_dir: Path
) -> None:
    limit = RateLimitConfig(max_attempts=3)  # loopback exempt, but not when forwarded
    gateway = await start_gateway(make_config(state_dir, rate_limit=limit))
    for n in range(3):
        assert await status(gateway, "bad", f"203.0.113.{n}") == 401
    # Every forwarded request was counted against the socket address, whatever it claimed.
    assert await status(gateway, TOKEN, "198.51.100.77") == 429
    assert await status(gateway, TOKEN, "::1") == 429
    assert await status(gateway, TOKEN, **{"X-Real-IP": "192.0.2.9"}) == 429
    assert await status(gateway, TOKEN) == 200  # a direct local program: exempt


async def test_a_spoofed_left_part_is_ignored_behind_a_trusted_proxy(
    start_gateway: StartGateway, state_dir: Path
) -> None:
    """The proxy appends the address it saw; what the client wrote to its left is ignored, so
    rotating it neither picks nor escapes the lockout key."""
    limit = RateLimitConfig(max_attempts=3)
    gateway = await start_gateway(
        make_config(state_dir, rate_limit=limit, trusted_proxies=(PROXY,))
    )
    for n in range(3):
        assert await status(gateway, "bad", f"10.9.9.{n}, 203.0.113.5") == 401
    assert await status(gateway, TOKEN, "10.1.1.1, 203.0.113.5") == 429
    assert await status(gateway, TOKEN, "203.0.113.5") == 429
    assert await status(gateway, TOKEN, "10.9.9.0", "203.0.113.5") == 429  # two header lines
    assert await status(gateway, TOKEN, "203.0.113.5, 198.51.100.8") == 200  # another client


@pytest.mark.parametrize("trusted", [(PROXY,), ()], ids=["trusted-proxy", "no-trusted-proxy"])
@pytest.mark.parametrize("claimed", ["::1", "127.0.0.1"])
async def test_a_forwarded_loopback_address_gets_no_exemption(
    start_gateway: StartGateway, state_dir: Path, trusted: tuple[str, ...], claimed: str
) -> None:
    limit = RateLimitConfig(max_attempts=2)  # exemptLoopback: true
    gateway = await start_gateway(make_config(state_dir, rate_limit=limit, trusted_proxies=trusted))
    for _ in range(2):
        assert await status(gateway, "bad", claimed) == 401
    assert await status(gateway, TOKEN, claimed) == 429


async def test_trusted_hops_are_skipped_right_to_left(
    start_gateway: StartGateway, state_dir: Path
) -> None:
    limit = RateLimitConfig(max_attempts=1, exempt_loopback=False)
    config = make_config(state_dir, rate_limit=limit, trusted_proxies=(PROXY, "10.0.0.2"))
    gateway = await start_gateway(config)
    # client 203.0.113.9 -> proxy 10.0.0.2 -> proxy 127.0.0.1 (the socket) -> gateway
    assert await status(gateway, "bad", "203.0.113.9, 10.0.0.2") == 401
    assert await status(gateway, TOKEN, "203.0.113.9") == 429
    assert await status(gateway, TOKEN, "[203.0.113.9]:4711, 10.0.0.2") == 429  # a port: same
    assert await status(gateway, TOKEN, "203.0.113.10:4711, 10.0.0.2") == 200


def headers(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


@pytest.mark.parametrize(
    ("pairs", "client"),
    [
        ([("X-Forwarded-For", "203.0.113.1")], "203.0.113.1"),
        ([("X-Forwarded-For", "1.1.1.1, 203.0.113.1, 10.0.0.2")], "203.0.113.1"),
        ([("X-Forwarded-For", "1.1.1.1"), ("X-Forwarded-For", "203.0.113.1")], "203.0.113.1"),
        ([("X-Forwarded-For", "203.0.113.1:8080")], "203.0.113.1"),
        ([("X-Forwarded-For", "[2001:DB8::1]:443")], "2001:db8::1"),
        ([("X-Forwarded-For", "2001:db8:0:0::1")], "2001:db8::1"),
        ([("X-Forwarded-For", "::ffff:203.0.113.1")], "203.0.113.1"),
        ([("X-Forwarded-For", "10.0.0.2, 10.0.0.3")], "10.0.0.2"),  # all trusted: the first
        ([("X-Forwarded-For", "1.1.1.1, unknown, 10.0.0.2")], None),  # garbage: no guessing
        ([("X-Forwarded-For", "")], None),
        ([("X-Real-IP", "203.0.113.7")], "203.0.113.7"),
        ([("X-Forwarded-For", "203.0.113.1"), ("X-Real-IP", "203.0.113.7")], "203.0.113.1"),
        ([], None),
    ],
)
def test_forwarded_client(pairs: list[tuple[str, str]], client: str | None) -> None:
    assert forwarded_client(headers(*pairs), frozenset({"10.0.0.2", "10.0.0.3"})) == client


async def test_an_ipv6_client_is_locked_out_by_its_64_not_its_address(
    start_gateway: StartGateway, state_dir: Path
) -> None:
    """A host usually holds a whole /64: new addresses from it are the same client."""
    limit = RateLimitConfig(max_attempts=3)
    gateway = await start_gateway(
        make_config(state_dir, rate_limit=limit, trusted_proxies=(PROXY,))
    )
    for n in range(3):
        assert await status(gateway, "bad", f"2001:db8:1:2::{n + 1:x}") == 401
    assert await status(gateway, TOKEN, "2001:db8:1:2:ffff:ffff:ffff:ffff") == 429
    assert await status(gateway, TOKEN, "[2001:DB8:1:2::77]:443") == 429
    assert await status(gateway, TOKEN, "2001:db8:1:3::1") == 200  # the next /64: another client
    assert await status(gateway, TOKEN, "203.0.113.9") == 200
