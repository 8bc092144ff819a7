"""Fixtures for the fetcher: a test server on loopback, and a watch on the loop's network calls.

`network` replaces the running loop's `getaddrinfo`, `sock_connect` and `create_connection`
(the calls `moltbot.net.fetch` and aiohttp make) for the test. It records every lookup and
every connection attempt, answers lookups for made-up names from a table, and refuses, before
any packet is sent, every connection to an address that is not loopback. So a test can assert
that a refused URL was refused before a connection was tried, and no test can send traffic off
the machine even when the fetcher is wrong.
"""

from __future__ import annotations

import asyncio
import errno
import gzip
import ipaddress
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

# Every handler that waits gives up after this long, so a test never hangs on one.
HANDLER_LIMIT_SECONDS = 3.0


@dataclass
class Network:
    lookups: list[str] = field(default_factory=list)
    connects: list[tuple[str, int]] = field(default_factory=list)
    # Made-up names: each lookup takes the next answer; the last one repeats.
    answers: dict[str, list[list[str]]] = field(default_factory=dict)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture
async def network(monkeypatch: pytest.MonkeyPatch) -> Network:
    loop = asyncio.get_running_loop()
    net = Network()
    real_getaddrinfo = loop.getaddrinfo
    real_sock_connect = loop.sock_connect
    real_create_connection = loop.create_connection

    async def getaddrinfo(host: Any, port: Any, **kwargs: Any) -> list[Any]:
        name = host.decode() if isinstance(host, bytes) else str(host)
        net.lookups.append(name)
        if name in net.answers:
            queue = net.answers[name]
            answer = queue.pop(0) if len(queue) > 1 else queue[0]
            return [_addrinfo(address, int(port or 0)) for address in answer]
        if name == "localhost" or _is_loopback(name):
            return await real_getaddrinfo(host, port, **kwargs)
        raise socket.gaierror(socket.EAI_NONAME, f"test network: no such host {name}")

    async def sock_connect(sock: socket.socket, address: Any) -> None:
        net.connects.append((address[0], address[1]))
        if not _is_loopback(address[0]):
            raise ConnectionRefusedError(errno.ECONNREFUSED, "test network: loopback only")
        return await real_sock_connect(sock, address)

    async def create_connection(*args: Any, **kwargs: Any) -> Any:
        host = kwargs.get("host", args[1] if len(args) > 1 else None)
        if host is not None:
            net.connects.append((host, kwargs.get("port", args[2] if len(args) > 2 else 0)))
            if not _is_loopback(host):
                raise ConnectionRefusedError(errno.ECONNREFUSED, "test network: loopback only")
        return await real_create_connection(*args, **kwargs)

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(loop, "sock_connect", sock_connect)
    monkeypatch.setattr(loop, "create_connection", create_connection)
    return net


def _addrinfo(address: str, port: int) -> tuple[Any, ...]:
    if ":" in address:
        return (socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port, 0, 0))
    return (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port))


@dataclass
class Upstream:
    """The test server: one app listening on 127.0.0.1 and on [::1]."""

    port: int
    v6_port: int | None
    hits: list[tuple[str, str]]  # (listening address, path and query) per request
    host_headers: list[str]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def paths(self) -> list[str]:
        return [path for _, path in self.hits]


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    hits: list[tuple[str, str]] = []
    host_headers: list[str] = []

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        hits.append((sockname[0] if sockname else "?", request.path_qs))
        host_headers.append(request.headers.get("Host", ""))
        return await handler(request)

    app = web.Application(middlewares=[record])
    app.router.add_routes(_routes())
    runner = web.AppRunner(app, shutdown_timeout=1.0, handler_cancellation=True)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    v6_port = None
    try:
        await web.TCPSite(runner, "::1", 0).start()
        v6_port = runner.addresses[1][1]
    except OSError:
        pass  # no IPv6 loopback here: the [::1] cases skip themselves
    yield Upstream(port, v6_port, hits, host_headers)
    await runner.cleanup()


@dataclass
class TlsUpstream:
    """An https server on 127.0.0.1 with a self-signed certificate for `secure.test`, which no
    client trusts; it records the server name (SNI) each handshake asked for."""

    port: int
    server_names: list[str | None]


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for secure.test and its key."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: no certificate for the https test")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
         "-subj", "/CN=secure.test", "-addext", "subjectAltName=DNS:secure.test"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


@pytest.fixture
async def tls_upstream(certificate: tuple[Path, Path]) -> AsyncIterator[TlsUpstream]:
    server_names: list[str | None] = []
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    context.sni_callback = lambda _sock, name, _context: server_names.append(name)
    app = web.Application()
    app.router.add_routes(_routes())
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
    yield TlsUpstream(runner.addresses[0][1], server_names)
    await runner.cleanup()


def _routes() -> list[web.RouteDef]:
    routes = web.RouteTableDef()

    @routes.get("/ok")
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    @routes.get("/png")
    async def png(request: web.Request) -> web.Response:
        return web.Response(body=b"\x89PNG\r\n\x1a\n" + b"\0" * 8, content_type="image/png")

    @routes.get("/type")
    async def typed(request: web.Request) -> web.Response:
        response = web.Response(body=b"body")
        if "ct" in request.query:
            response.headers["Content-Type"] = request.query["ct"]
        else:
            response.headers.popall("Content-Type", None)
        return response

    @routes.get("/bytes/{n}")
    async def sized(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * int(request.match_info["n"]))

    @routes.get("/chunked/{n}")
    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        left = int(request.match_info["n"])
        while left > 0:
            await response.write(b"x" * min(left, 1024))
            left -= 1024
        await response.write_eof()
        return response

    @routes.get("/gzip/{n}")
    async def gzipped(request: web.Request) -> web.Response:
        body = gzip.compress(b"\0" * int(request.match_info["n"]))
        return web.Response(body=body, headers={"Content-Encoding": "gzip"})

    @routes.get("/declares-huge")
    async def declares_huge(request: web.Request) -> web.StreamResponse:
        # Says 10 GB, sends 100 bytes, then waits: only a Content-Length check ends this early.
        response = web.StreamResponse(headers={"Content-Length": str(10**10)})
        await response.prepare(request)
        await response.write(b"x" * 100)
        await asyncio.sleep(HANDLER_LIMIT_SECONDS)
        return response

    @routes.get("/trickle")
    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(int(HANDLER_LIMIT_SECONDS / 0.05)):
            await response.write(b"x")
            await asyncio.sleep(0.05)
        await response.write_eof()
        return response

    @routes.get("/silent")
    async def silent(request: web.Request) -> web.Response:
        await asyncio.sleep(HANDLER_LIMIT_SECONDS)
        return web.Response(text="late")

    @routes.get("/redirect")
    async def redirect(request: web.Request) -> web.Response:
        status = int(request.query.get("status", "302"))
        return web.Response(status=status, headers={"Location": request.query["to"]})

    @routes.get("/no-location")
    async def no_location(request: web.Request) -> web.Response:
        return web.Response(status=302)

    @routes.get("/chain/{n}")
    async def chain(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        if n == 0:
            return web.Response(text="end of chain")
        return web.Response(status=302, headers={"Location": f"/chain/{n - 1}"})

    @routes.get("/slow-chain/{n}")
    async def slow_chain(request: web.Request) -> web.Response:
        await asyncio.sleep(0.2)
        n = int(request.match_info["n"])
        if n == 0:
            return web.Response(text="end of chain")
        return web.Response(status=302, headers={"Location": f"/slow-chain/{n - 1}"})

    @routes.get("/status/{code}")
    async def status(request: web.Request) -> web.Response:
        code = int(request.match_info["code"])
        return web.Response(status=code, reason="Whatever The Server Says", text="no")

    return list(routes)
