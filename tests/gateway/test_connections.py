"""Connection limits through the real server: deadlines for slow headers and bodies, caps per
address and in all that push out idle sockets rather than the next client, and aiohttp's own
parser errors in the JSON envelope."""

from __future__ import annotations

import asyncio
import os
import resource
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp.http_parser import HttpRequestParser

from moltbot.client import GatewayClient
from moltbot.config.model import LimitsConfig
from moltbot.gateway.connections import FD_RESERVE, ConnectionGuard, raise_open_files_limit
from tests.conftest import TOKEN, Gateway, StartGateway, make_config
from tests.gateway.raw import WAIT, RawConnection, connect, request_head

SLOW = "127.0.0.2"  # another address of this machine: the slow clients'


def limits(**fields: float) -> LimitsConfig:
    return LimitsConfig(**fields)  # type: ignore[arg-type]


async def healthz(gateway: Gateway) -> int:
    async with aiohttp.ClientSession() as http, http.get(f"{gateway.url}/healthz") as resp:
        return resp.status


async def a_real_client_works(gateway: Gateway) -> None:
    """/healthz, the OpenAI SDK and the WebSocket client, each on fresh connections."""
    assert await healthz(gateway) == 200
    async with gateway.openai() as sdk:
        answer = await sdk.chat.completions.create(
            model="moltbot", messages=[{"role": "user", "content": "still there?"}]
        )
    assert "still there?" in (answer.choices[0].message.content or "")
    client = await GatewayClient.connect(gateway.ws_url, token=TOKEN, client_id="test", mode="test")
    try:
        assert client.hello["type"] == "hello-ok"
        assert isinstance(await client.request("health"), dict)
    finally:
        await client.close()


# -- deadlines --------------------------------------------------------------------------------


async def test_headers_sent_byte_by_byte_are_cut_off_at_the_deadline(
    start_gateway: StartGateway, state_dir: Path
) -> None:
    config = make_config(state_dir, limits=limits(headers_timeout_seconds=0.5))
    gateway = await start_gateway(config)
    conn = await connect(gateway)
    started = time.monotonic()
    answer = asyncio.create_task(conn.response())
    try:
        for byte in request_head(X_Padding="x" * 200):  # longer than the deadline allows
            if answer.done():
                break
            await conn.send(bytes([byte]))
            await asyncio.sleep(0.01)
    except ConnectionError:
        pass  # closed while we were still writing: the answer was sent before
    response = await answer
    assert 0.4 < time.monotonic() - started < 3
    assert response.status == 408
    assert response.error["code"] == "request_timeout"
    assert await conn.closed()
    conn.close()
    async with asyncio.timeout(WAIT):  # and no longer counted
        while len(gateway.runner.guard):  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_a_body_sent_slowly_gets_408_and_the_connection_closes(
    start_gateway: StartGateway, state_dir: Path
) -> None:
    gateway = await start_gateway(make_config(state_dir, limits=limits(body_timeout_seconds=0.5)))
    conn = await connect(gateway)
    head = request_head(
        "POST",
        "/v1/chat/completions",
        Authorization=f"Bearer {TOKEN}",
        Content_Type="application/json",
        Content_Length="1000",
    )
    started = time.monotonic()
    await conn.send(head + b'{"model": "moltbot", ')  # and then nothing more
    response = await conn.response()
    assert 0.4 < time.monotonic() - started < 3
    assert response.status == 408
    assert response.error == {
        "message": "request body not received within 0.5 s",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    assert await conn.closed()
    conn.close()


async def test_an_idle_connection_is_not_late_but_a_started_request_has_a_deadline(
    start_gateway: StartGateway, state_dir: Path
) -> None:
    """Spare pooled sockets and kept-alive ones send nothing for a while: that is not slow."""
    config = make_config(state_dir, limits=limits(headers_timeout_seconds=0.3))
    gateway = await start_gateway(config)
    conn = await connect(gateway)
    await asyncio.sleep(0.6)  # opened, nothing sent yet
    await conn.send(request_head())
    assert (await conn.response()).status == 200
    await asyncio.sleep(0.6)  # idle between requests: not cut off
    await conn.send(request_head())
    assert (await conn.response()).status == 200
    await conn.send(request_head()[:20])  # the next request starts, and stalls
    assert (await conn.response()).status == 408
    assert await conn.closed()
    conn.close()


# -- caps -------------------------------------------------------------------------------------


async def test_hundreds_of_slow_sockets_push_out_only_each_other(
    start_gateway: StartGateway, state_dir: Path
) -> None:
    """300 sockets that never finish their headers, half from another address and half from
    the real client's own (every local program is 127.0.0.1): at the per-address cap each new
    one closes the oldest idle one, so the real client still gets in over HTTP, the SDK and
    WebSocket."""
    cap = 20
    config = make_config(state_dir, limits=limits(max_connections_per_ip=cap))
    gateway = await start_gateway(config)
    guard = gateway.runner.guard
    partial = request_head()[:-10]
    slow: dict[str, list[RawConnection]] = {SLOW: [], "127.0.0.1": []}
    try:
        for source, conns in slow.items():
            for _ in range(150):
                conn = await connect(gateway, source)
                await conn.send(partial)
                conns.append(conn)
        await asyncio.sleep(0.1)  # the last writes have been read
        assert guard.open_from(SLOW) == cap and guard.open_from("127.0.0.1") == cap
        for conns in slow.values():  # the oldest were closed to make room
            assert all(await asyncio.gather(*(conn.closed() for conn in conns[:-cap])))
        await a_real_client_works(gateway)
        assert guard.open_from(SLOW) == cap  # the other address kept its sockets
    finally:
        for conns in slow.values():
            for conn in conns:
                conn.close()


async def test_when_every_socket_is_busy_the_newcomer_gets_503(
    start_gateway: StartGateway, state_dir: Path
) -> None:
    config = make_config(state_dir, limits=limits(max_connections_per_ip=2))
    gateway = await start_gateway(config)
    head = request_head(
        "POST",
        "/v1/chat/completions",
        Authorization=f"Bearer {TOKEN}",
        Content_Type="application/json",
        Content_Length="1000",
    )
    busy = [await connect(gateway) for _ in range(2)]
    for conn in busy:
        await conn.send(head + b"{")  # a handler is reading each body: nothing to evict
    await asyncio.sleep(0.1)
    refused = await connect(gateway)
    response = await refused.response()
    assert response.status == 503 and response.headers["retry-after"] == "1"
    assert response.error["code"] == "too_many_connections"
    assert await refused.closed()
    other = await connect(gateway, SLOW)  # another address is not held up
    await other.send(request_head())
    assert (await other.response()).status == 200
    for conn in (*busy, refused, other):
        conn.close()


async def test_trusted_proxies_count_only_against_the_total(
    start_gateway: StartGateway, state_dir: Path
) -> None:
    """Behind a proxy every client shares its address: a per-address cap would throttle all."""
    config = make_config(
        state_dir, trusted_proxies=(SLOW,), limits=limits(max_connections_per_ip=2)
    )
    gateway = await start_gateway(config)
    conns = [await connect(gateway, SLOW) for _ in range(5)]
    for conn in conns:
        await conn.send(request_head())
    for conn in conns:
        assert (await conn.response()).status == 200
        conn.close()


# -- aiohttp's parser answers in the envelope -------------------------------------------------

# aiohttp's C parser (llhttp, in its wheels) rejects unknown methods itself; its pure-Python
# fallback lets them through to the router, whose 405 is rendered by the error middleware.
C_PARSER = HttpRequestParser.__module__ == "aiohttp._http_parser"
BAD_METHOD = "Invalid method encountered" if C_PARSER else None


@pytest.mark.parametrize(
    ("request_bytes", "reason"),
    [
        (b"get /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", BAD_METHOD),
        (b"FOO / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", BAD_METHOD),
        (b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header\r\n\r\n", "Invalid header token"),
        (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n", None),  # TLS on the HTTP port
    ],
    ids=["lower-case-method", "unknown-method", "bad-header", "tls"],
)
async def test_requests_the_parser_rejects_get_the_json_envelope(
    start_gateway: StartGateway, state_dir: Path, request_bytes: bytes, reason: str | None
) -> None:
    gateway = await start_gateway(make_config(state_dir))
    conn = await connect(gateway)
    await conn.send(request_bytes)
    response = await conn.response()
    error = response.error
    assert error["type"] == "invalid_request_error"
    if b"HTTP/1.1" in request_bytes.split(b"\r\n")[0] and reason is None:  # the router's
        assert response.status == 405
        return
    assert response.status == 400
    assert error["message"].startswith("malformed HTTP request: ")
    if reason is not None:
        assert error["message"] == f"malformed HTTP request: {reason}"
    assert "\n" not in error["message"] and "b'" not in error["message"]
    assert await conn.closed()
    conn.close()


# -- the bookkeeping, alone -------------------------------------------------------------------


class FakeHandler:
    """What the guard uses of a GuardedRequestHandler."""

    def __init__(self, guard: ConnectionGuard) -> None:
        self._guard = guard
        self._ip: str | None = None
        self._ip_group = None
        self._idle = False
        self.evicted = False

    def evict(self) -> None:
        self._guard.forget(self)  # type: ignore[arg-type]
        self.evicted = True


def test_the_guard_evicts_the_longest_idle_and_refuses_only_when_all_are_busy() -> None:
    guard = ConnectionGuard(limits(max_connections=3, max_connections_per_ip=1), frozenset({"p"}))

    def admit(ip: str) -> FakeHandler | None:
        handler = FakeHandler(guard)
        return handler if guard.admit(handler, ip) else None  # type: ignore[arg-type]

    a1 = admit("a")
    assert a1 is not None
    a2 = admit("a")  # per address: a1 was idle and makes room
    assert a1.evicted and a2 is not None and guard.open_from("a") == 1 and len(guard) == 1
    guard.busy(a2)  # type: ignore[arg-type]
    assert admit("a") is None  # all of a's sockets busy: refused
    assert guard.open_from("a") == 1
    p1, p2 = admit("p"), admit("p")  # a trusted proxy: only the total counts
    assert p1 and p2 and len(guard) == 3 and guard.open_from("p") == 0
    b1 = admit("b")  # in all: the longest idle anywhere (p1) makes room
    assert b1 and p1.evicted and not p2.evicted and len(guard) == 3
    guard.idle(a2)  # type: ignore[arg-type]  # a2 idles again: now the newest idle
    c1 = admit("c")
    assert c1 and p2.evicted and not a2.evicted
    for handler in (a2, b1, c1):
        guard.forget(handler)  # type: ignore[arg-type]
        guard.forget(handler)  # type: ignore[arg-type]  # once only
    assert len(guard) == 0 and all(guard.open_from(ip) == 0 for ip in "abcp")


def test_the_open_file_limit_is_raised_to_fit_the_caps() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2000:
        pytest.skip(f"the hard open-file limit ({hard}) leaves no room to test in")
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(512, _open_files() + 64), hard))
        raise_open_files_limit(1000)
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == 1000 + FD_RESERVE
        raise_open_files_limit(10)  # enough already: never lowered
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == 1000 + FD_RESERVE
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_the_guard_counts_an_ipv6_client_by_its_64() -> None:
    guard = ConnectionGuard(limits(max_connections=10, max_connections_per_ip=1), frozenset())
    first, second, elsewhere = (FakeHandler(guard) for _ in range(3))
    assert guard.admit(first, "2001:db8:1:2::1")  # type: ignore[arg-type]
    assert guard.admit(second, "2001:db8:1:2::ffff")  # type: ignore[arg-type]
    assert first.evicted  # the same /64: one client, over its cap of one
    assert guard.admit(elsewhere, "2001:db8:1:3::1")  # type: ignore[arg-type]
    assert not second.evicted and guard.open_from("2001:db8:1:2::7") == 1 and len(guard) == 2
