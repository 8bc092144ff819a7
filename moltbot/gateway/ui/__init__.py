"""The web chat page: static files shipped in the package, read once, served to browsers.

The page is a client of the WebSocket control plane like any other; it connects to its own
origin, next to itself (`<page>/ws`). Every file goes out with a strict Content-Security-Policy
(only our own scripts, styles and sockets; no inline code, no eval, no framing) and the usual
hardening headers. At the root, `/` answers browsers with the page and WebSocket upgrades with
the control plane (`setup_ws(..., root_page=ui.page)`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from moltbot.config.model import ControlUiConfig
from moltbot.gateway.ws.endpoint import websocket

STATIC_DIR = Path(__file__).parent / "static"
PAGE_FILE = "index.html"
# Every file the page uses, and nothing else: no directory listing, no path from the request.
ASSET_TYPES = {
    "app.js": "text/javascript",
    "app.css": "text/css",
    "icon.svg": "image/svg+xml",
}
# A Host header fit to name in the CSP; anything else gets 'self' alone.
_HOST = re.compile(r"[A-Za-z0-9.-]{1,253}(:\d{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](:\d{1,5})?")
_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'{sockets}; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'; object-src 'none'"
)


@dataclass(frozen=True, slots=True)
class StaticFile:
    body: bytes
    content_type: str
    etag: str

    @classmethod
    def read(cls, name: str, content_type: str) -> StaticFile:
        body = (STATIC_DIR / name).read_bytes()
        return cls(body, content_type, f'"{hashlib.sha256(body).hexdigest()[:16]}"')


def security_headers(request: web.Request) -> dict[str, str]:
    host = request.host
    # Older browsers do not let 'self' cover ws:/wss:, so the socket origin is named too.
    sockets = f" ws://{host} wss://{host}" if _HOST.fullmatch(host) else ""
    return {
        "Content-Security-Policy": _POLICY.format(sockets=sockets),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cross-Origin-Resource-Policy": "same-origin",
        # Revalidate every time (cheap with the ETag), so an upgrade shows at once.
        "Cache-Control": "no-cache",
    }


def respond(request: web.Request, file: StaticFile) -> web.Response:
    headers = security_headers(request)
    headers["ETag"] = file.etag
    if request.headers.get("If-None-Match") == file.etag:
        return web.Response(status=304, headers=headers)
    headers["Content-Type"] = f"{file.content_type}; charset=utf-8"
    return web.Response(body=file.body, headers=headers)


class ControlUi:
    def __init__(self, config: ControlUiConfig) -> None:
        self.base_path = config.base_path  # "" (root) or "/ui"
        self._page = StaticFile.read(PAGE_FILE, "text/html")
        self._assets = {name: StaticFile.read(name, kind) for name, kind in ASSET_TYPES.items()}

    @property
    def at_root(self) -> bool:
        return self.base_path == ""

    async def page(self, request: web.Request) -> web.Response:
        return respond(request, self._page)

    async def _redirect_to_slash(self, request: web.Request) -> web.Response:
        # The page's relative URLs (app.js, ws) need the trailing slash.
        raise web.HTTPPermanentRedirect(self.base_path + "/")

    def add_routes(self, app: web.Application) -> None:
        """The assets, and at a base path other than the root the page and its socket (the
        root page is served through `setup_ws`)."""
        base = self.base_path
        for name, file in self._assets.items():
            app.router.add_get(f"{base}/{name}", _serve(file))
        if not self.at_root:
            app.router.add_get(base, self._redirect_to_slash)
            app.router.add_get(f"{base}/", self.page)
            app.router.add_get(f"{base}/ws", websocket)


def _serve(file: StaticFile) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        return respond(request, file)

    return handler
