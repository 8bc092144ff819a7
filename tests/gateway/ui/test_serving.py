"""How the web page is served: headers, what `/` answers to whom, base paths, switching it off."""

from __future__ import annotations

from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path

import aiohttp
import pytest

from moltbot.client import GatewayClient
from moltbot.config.model import ControlUiConfig
from moltbot.gateway.ui import ASSET_TYPES, STATIC_DIR
from tests.conftest import TOKEN, StartGateway, make_config


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def assert_hardened(response: aiohttp.ClientResponse, host: str) -> None:
    policy = response.headers["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert directives["connect-src"] == f"'self' ws://{host} wss://{host}"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe" not in policy  # no 'unsafe-inline', no 'unsafe-eval'
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["X-Frame-Options"] == "DENY"


async def test_a_browser_get_on_root_is_the_page_and_its_assets_are_hardened_too(
    start_gateway: StartGateway, state_dir: Path, http: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway(make_config(state_dir))
    host = gateway.url.removeprefix("http://")
    async with http.get(gateway.url + "/") as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        assert "<title>Moltbot</title>" in await response.text()
        assert_hardened(response, host)
    for name, kind in ASSET_TYPES.items():
        async with http.get(f"{gateway.url}/{name}") as response:
            assert response.status == 200
            assert response.content_type == kind
            assert await response.read() == (STATIC_DIR / name).read_bytes()
            assert_hardened(response, host)


async def test_websocket_upgrades_on_root_still_reach_the_control_plane(
    start_gateway: StartGateway, state_dir: Path
) -> None:
    gateway = await start_gateway(make_config(state_dir))
    for path in ("/", "/ws"):
        client = await GatewayClient.connect(gateway.ws_url + path, token=TOKEN)
        try:
            assert client.hello["type"] == "hello-ok"
            assert (await client.request("health"))["ok"] is True
        finally:
            await client.close()


async def test_a_broken_upgrade_on_root_is_still_426_not_the_page(
    start_gateway: StartGateway, state_dir: Path, http: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway(make_config(state_dir))
    async with http.get(gateway.url + "/", headers={"Upgrade": "websocket"}) as response:
        assert response.status == 426


async def test_unchanged_files_revalidate_with_304(
    start_gateway: StartGateway, state_dir: Path, http: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway(make_config(state_dir))
    async with http.get(gateway.url + "/app.js") as response:
        etag = response.headers["ETag"]
        assert response.headers["Cache-Control"] == "no-cache"
    async with http.get(gateway.url + "/app.js", headers={"If-None-Match": etag}) as response:
        assert response.status == 304
        assert await response.read() == b""


async def test_an_odd_host_header_cannot_write_into_the_policy(
    start_gateway: StartGateway, state_dir: Path, http: aiohttp.ClientSession
) -> None:
    headers = {"Host": "evil.example; script-src *"}
    loopback = await start_gateway(make_config(state_dir))
    async with http.get(loopback.url + "/", headers=headers) as response:
        assert response.status == 421  # such a Host never gets this far on loopback
    # A LAN bind does not check Host names; the page's policy still ignores the header.
    gateway = await start_gateway(make_config(state_dir / "lan", bind="lan"))
    async with http.get(gateway.url + "/", headers=headers) as response:
        assert response.status == 200
        policy = response.headers["Content-Security-Policy"]
    assert "connect-src 'self';" in policy and "evil" not in policy


async def test_other_methods_on_root_are_405(
    start_gateway: StartGateway, state_dir: Path, http: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway(make_config(state_dir))
    async with http.post(gateway.url + "/", data=b"x") as response:
        assert response.status == 405
        assert (await response.json())["error"]["type"] == "invalid_request_error"


async def test_disabled_the_page_is_gone_and_root_speaks_websocket_only(
    start_gateway: StartGateway, state_dir: Path, http: aiohttp.ClientSession
) -> None:
    config = make_config(state_dir, control_ui=ControlUiConfig(enabled=False))
    gateway = await start_gateway(config)
    async with http.get(gateway.url + "/") as response:
        assert response.status == 426
    async with http.get(gateway.url + "/app.js") as response:
        assert response.status == 404


async def test_under_a_base_path(
    start_gateway: StartGateway, state_dir: Path, http: aiohttp.ClientSession
) -> None:
    config = make_config(state_dir, control_ui=ControlUiConfig(base_path="/ui"))
    gateway = await start_gateway(config)
    async with http.get(gateway.url + "/ui", allow_redirects=False) as response:
        assert response.status == 308
        assert response.headers["Location"] == "/ui/"
    async with http.get(gateway.url + "/ui/") as response:
        assert response.status == 200 and response.content_type == "text/html"
    async with http.get(gateway.url + "/ui/app.css") as response:
        assert response.status == 200 and response.content_type == "text/css"
    async with http.get(gateway.url + "/") as response:
        assert response.status == 426  # the root is the WebSocket's alone again
    async with http.get(gateway.url + "/app.css") as response:
        assert response.status == 404
    client = await GatewayClient.connect(gateway.ws_url + "/ui/ws", token=TOKEN)
    await client.close()


class _InlineFinder(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        if tag == "style" or "style" in names or any(n.startswith("on") for n in names):
            self.problems.append(f"inline style or handler on <{tag}>")
        if tag == "script":
            self._in_script = True
            if "src" not in names:
                self.problems.append("inline <script>")
        for name, value in attrs:
            if name in ("src", "href") and value and "//" in value:
                self.problems.append(f"asset from elsewhere: {value}")

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False if tag == "script" else self._in_script

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.problems.append("inline script code")


def test_the_page_has_no_inline_code_or_outside_assets_and_the_script_no_eval() -> None:
    finder = _InlineFinder()
    finder.feed((STATIC_DIR / "index.html").read_text())
    assert finder.problems == []
    script = (STATIC_DIR / "app.js").read_text()
    for banned in ("eval(", "new Function", "innerHTML", "outerHTML", "insertAdjacentHTML"):
        assert banned not in script
