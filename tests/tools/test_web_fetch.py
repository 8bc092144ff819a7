"""web_fetch through the real server: loopback and private addresses refused (directly, by
name and on a redirect), fetches from a loopback test server only when the allowlist names
it, HTML turned into text, and the caps.

The `network` fixture (tests/net/conftest.py) answers made-up host names from a table and
refuses every connection that is not to loopback, so nothing here leaves the machine.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from moltbot.config.model import WebFetchConfig
from tests.fake_tool_upstream import Call, Reply, ToolUpstream, in_order
from tests.net.conftest import Network
from tests.net.conftest import network as network  # the fixture, for these tests too
from tests.tools.conftest import chat, tool_config

PAGE = b"""<!doctype html><html><head><title>Release notes</title>
<script>document.write("tracking")</script><style>body{color:red}</style></head>
<body><nav>Home | Blog | About</nav><main><h1>Version 2</h1>
<p>Faster <b>startup</b> and a <a href="/x">new API</a>.</p><ul><li>one</li><li>two</li></ul>
</main><footer>(c) someone</footer></body></html>"""


@pytest.fixture
async def site() -> AsyncIterator[str]:
    """A test server on 127.0.0.1; its base URL."""
    routes = web.RouteTableDef()

    @routes.get("/page")
    async def page(request: web.Request) -> web.Response:
        return web.Response(body=PAGE, content_type="text/html", charset="utf-8")

    @routes.get("/plain")
    async def plain(request: web.Request) -> web.Response:
        return web.Response(text="just text\n" * 50)

    @routes.get("/png")
    async def png(request: web.Request) -> web.Response:
        return web.Response(body=b"\x89PNG\r\n\x1a\n", content_type="image/png")

    @routes.get("/big")
    async def big(request: web.Request) -> web.Response:
        return web.Response(text="x" * 20_000)

    @routes.get("/redirect")
    async def redirect(request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": request.query["to"]})

    @routes.get("/chain/{n}")
    async def chain(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        if n == 0:
            return web.Response(text="end of chain")
        return web.Response(status=302, headers={"Location": f"/chain/{n - 1}"})

    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def fetch_results(
    state_dir: Any, workspace: Any, start_gateway: Any, web_config: WebFetchConfig, *args: Any
) -> list[str]:
    calls = tuple(Call("web_fetch", a if isinstance(a, dict) else {"url": a}) for a in args)
    async with ToolUpstream(in_order(Reply(calls=calls))) as up:
        config = tool_config(state_dir, up, workspace, web=web_config)
        await chat(await start_gateway(config))
    return up.requests[1].tool_results()


async def test_loopback_and_private_addresses_are_refused(
    network: Network, site: str, state_dir, workspace, start_gateway
):
    port = site.rsplit(":", 1)[1]
    network.answers["inside.example"] = [["192.168.1.5"]]
    network.answers["both.example"] = [["93.184.216.34", "127.0.0.1"]]
    results = await fetch_results(
        state_dir,
        workspace,
        start_gateway,
        WebFetchConfig(),
        f"{site}/page",
        f"http://localhost:{port}/page",
        f"http://[::1]:{port}/page",
        "http://10.1.2.3/admin",
        "http://169.254.169.254/latest/meta-data/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://inside.example/",
        f"http://both.example:{port}/page",
        "file:///etc/passwd",
    )
    assert results == [
        f"error: refused to fetch {site}/page: loopback address",
        f"error: refused to fetch http://localhost:{port}/page: localhost resolves to a "
        "non-public address (loopback)",
        f"error: refused to fetch http://[::1]:{port}/page: loopback address",
        "error: refused to fetch http://10.1.2.3/admin: private address",
        "error: refused to fetch http://169.254.169.254/latest/meta-data/: link-local address",
        "error: refused to fetch http://metadata.google.internal/computeMetadata/v1/: "
        "a cloud metadata host",
        "error: refused to fetch http://inside.example/: inside.example resolves to a "
        "non-public address (private)",
        f"error: refused to fetch http://both.example:{port}/page: both.example resolves to a "
        "non-public address (loopback)",
        "error: refused to fetch file:///etc/passwd: only http and https URLs can be fetched",
    ]
    # Every refusal came before a connection (the others are to the gateway and its model).
    assert [c for c in network.connects if c[1] == int(port) or c[0] != "127.0.0.1"] == []


async def test_an_allowlisted_host_is_fetched_as_readable_text(
    network: Network, site: str, state_dir, workspace, start_gateway
):
    allow = WebFetchConfig(allowed_hosts=("127.0.0.1",))
    page, plain, short = await fetch_results(
        state_dir,
        workspace,
        start_gateway,
        allow,
        f"{site}/page",
        f"{site}/plain",
        {"url": f"{site}/plain", "maxChars": 100},
    )
    assert page == (
        f"URL: {site}/page\nContent-Type: text/html\nTitle: Release notes\n\n"
        "# Version 2\n\nFaster startup and a new API.\n\n- one\n- two"
    )
    assert plain == f"URL: {site}/plain\nContent-Type: text/plain\n\n" + "just text\n" * 50
    assert short.endswith(
        "\n\n" + "just text\n" * 10 + "\n[truncated: 400 more characters not shown]"
    )


async def test_redirects_are_checked_on_every_hop(
    network: Network, site: str, state_dir, workspace, start_gateway
):
    port = site.rsplit(":", 1)[1]
    network.answers["intranet.example"] = [["127.0.0.1"]]
    intranet = f"http://intranet.example:{port}"
    allow = WebFetchConfig(allowed_hosts=("intranet.example",))  # the name, not its address
    results = await fetch_results(
        state_dir,
        workspace,
        start_gateway,
        allow,
        f"{intranet}/page",
        f"{intranet}/redirect?to=http://127.0.0.1:{port}/page",
        f"{intranet}/redirect?to=http://10.9.8.7/secret",
        f"{intranet}/chain/3",
        f"{intranet}/chain/4",
    )
    page, to_loopback, to_private, three, four = results
    assert page.startswith(f"URL: {intranet}/page\n")
    assert to_loopback == f"error: refused to fetch http://127.0.0.1:{port}/page: loopback address"
    assert to_private == "error: refused to fetch http://10.9.8.7/secret: private address"
    assert three.endswith("\n\nend of chain")
    assert four == f"error: refused to fetch {intranet}/chain/1: more than 3 redirects"
    assert ("10.9.8.7", 80) not in network.connects


async def test_types_and_sizes_are_capped(
    network: Network, site: str, state_dir, workspace, start_gateway
):
    allow = WebFetchConfig(allowed_hosts=("127.0.0.1",), max_bytes=10_000)
    png, big = await fetch_results(
        state_dir, workspace, start_gateway, allow, f"{site}/png", f"{site}/big"
    )
    assert png == f"error: refused to fetch {site}/png: content type image/png is not allowed"
    assert big == f"error: refused to fetch {site}/big: larger than 10000 bytes"


async def test_web_fetch_is_not_in_the_default_policy(state_dir, workspace, start_gateway):
    from moltbot.config.model import ToolRules

    async with ToolUpstream(in_order(Reply(calls=(Call("web_fetch", {"url": "x"}),)))) as up:
        config = tool_config(state_dir, up, workspace, rules=ToolRules())
        await chat(await start_gateway(config))
    assert "web_fetch" not in up.requests[0].tool_names()
    assert up.requests[1].tool_results()[0].startswith("error: there is no tool 'web_fetch'")
