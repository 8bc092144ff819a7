"""The WebSocket control plane (protocol 3) on the gateway's port.

    app = web.Application()
    ...  # CONFIG_KEY, AUTH_KEY set, RUNTIME_KEY set by a cleanup_ctx registered earlier
    setup_ws(app, WsOptions(tick_interval=0.05))  # options: tests shorten timers here

Modules: `protocol` (frames, errors), `params` (validation), `connection` (one socket's
outgoing queue), `endpoint` (the handler), `admission` (the cap on pending handshakes),
`handshake`, `dispatch`, `hub` (routing of run events, ticks, shutdown), `routes`
(subscriptions), `chat_events`, and the methods in `info`, `sessions_api`, `agent_api`,
`chat_api`, registered in `methods`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from moltbot.gateway.state import CONFIG_KEY, RUNTIME_KEY, STARTED_AT_KEY
from moltbot.gateway.ws.endpoint import upgrade_or, websocket
from moltbot.gateway.ws.hub import HUB_KEY, Hub
from moltbot.gateway.ws.options import WsOptions

__all__ = ["HUB_KEY", "Hub", "WsOptions", "setup_ws"]

WS_PATHS = ("/", "/ws")


def setup_ws(
    app: web.Application,
    options: WsOptions | None = None,
    *,
    root_page: Callable[[web.Request], Awaitable[web.StreamResponse]] | None = None,
) -> None:
    """Register the WS routes and the hub's lifecycle. Call after the runtime's cleanup_ctx
    is registered: the hub starts after the runtime and stops after it has closed.
    `root_page`: what a plain GET on `/` gets instead of 426 (the web chat page)."""
    hub = Hub(app[CONFIG_KEY], options or WsOptions(), app[STARTED_AT_KEY])
    app[HUB_KEY] = hub
    for path in WS_PATHS:
        handler = upgrade_or(root_page) if path == "/" and root_page else websocket
        app.router.add_get(path, handler)

    async def start(app: web.Application) -> None:
        hub.start(app[RUNTIME_KEY])

    async def say_goodbye(app: web.Application) -> None:
        hub.shutdown()

    async def stop(app: web.Application) -> None:
        await hub.close()

    # on_startup / on_cleanup run after the app's cleanup_ctx enter / exit respectively.
    app.on_startup.append(start)
    app.on_shutdown.append(say_goodbye)
    app.on_cleanup.append(stop)
