"""The WebSocket endpoint: upgrade, handshake, then read requests until the socket closes.

Once upgraded, nothing may escape the handler: aiohttp's HTTP error handling would write a
500 response onto a socket that now speaks WebSocket. An unexpected error closes it with 1011.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

from aiohttp import WSMsgType, web

from moltbot.gateway.auth import client_key
from moltbot.gateway.state import AUTH_KEY
from moltbot.gateway.ws.admission import Slot
from moltbot.gateway.ws.call import can_approve
from moltbot.gateway.ws.connection import Connection
from moltbot.gateway.ws.dispatch import Dispatcher
from moltbot.gateway.ws.handshake import Peer, handshake
from moltbot.gateway.ws.hub import HUB_KEY, Hub
from moltbot.gateway.ws.options import WsOptions
from moltbot.gateway.ws.protocol import (
    CLOSE_INTERNAL_ERROR,
    CLOSE_SERVICE_RESTART,
    CLOSE_TRY_AGAIN_LATER,
)
from moltbot.logs import get_logger

log = get_logger("moltbot.ws")


async def websocket(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB_KEY]
    ws = _socket(hub.options)
    if not ws.can_prepare(request).ok:
        return upgrade_required()
    peer = Peer(*request.app[AUTH_KEY].client(request))
    await ws.prepare(request)
    await serve(request, ws, hub, peer)
    return ws


def upgrade_or(
    page: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """One path for both: requests that ask for a WebSocket get the control plane (a broken
    upgrade still gets its 426 there), every other GET gets `page`."""

    async def dispatch(request: web.Request) -> web.StreamResponse:
        if "websocket" in request.headers.get("Upgrade", "").lower():
            return await websocket(request)
        return await page(request)

    return dispatch


def _socket(options: WsOptions) -> web.WebSocketResponse:
    return web.WebSocketResponse(
        heartbeat=options.heartbeat,
        max_msg_size=options.max_payload,  # larger frames: aiohttp closes with 1009
        timeout=options.close_timeout,
        compress=False,  # byte counts for the buffer limit stay honest
    )


async def serve(request: web.Request, ws: web.WebSocketResponse, hub: Hub, peer: Peer) -> None:
    conn = Connection(
        ws,
        transport=request.transport,
        conn_id=str(uuid.uuid4()),
        remote=request.remote or "",
        max_buffered=hub.options.max_buffered_bytes,
        close_timeout=hub.options.close_timeout,
        max_payload=hub.options.max_payload,
    )
    slot = hub.handshakes.take(client_key(peer.ip), lambda: _evicted(conn, hub))
    try:
        await converse(request, conn, hub, peer, slot)
    except Exception:
        log.exception("ws handler failed", conn=conn.id)
        conn.close(CLOSE_INTERNAL_ERROR, "internal error")
    finally:
        try:
            await conn.finish()
        finally:
            slot.release()  # a failed handshake holds its slot until the socket is gone
        log.info("ws client gone", conn=conn.id, code=ws.close_code or conn.close_code)


def _evicted(conn: Connection, hub: Hub) -> None:
    """Pushed out by a newer handshake at a cap: try again later. Not a failed attempt: the
    handshake sees the close as the client going away before it said anything. Dropped at
    once, so that the socket frees its connection slot too (connections.py)."""
    log.debug("ws handshake evicted: too many pending", conn=conn.id, pending=len(hub.handshakes))
    conn.drop(CLOSE_TRY_AGAIN_LATER, "try again later")


async def converse(
    request: web.Request, conn: Connection, hub: Hub, peer: Peer, slot: Slot
) -> None:
    """The handshake, then requests until the socket closes."""
    if hub.stopping:
        conn.close(CLOSE_SERVICE_RESTART, "service restart")
        return
    hub.handshaking.add(conn)
    try:
        client = await handshake(request, conn, hub, peer)
    finally:
        hub.handshaking.discard(conn)
    if client is None:
        return  # failed: the slot is held until the socket is gone (see serve)
    slot.release()  # authenticated: no longer counts against the pre-auth caps
    dispatcher: Dispatcher | None = None
    try:
        hub.register(conn)
        if can_approve(client):
            hub.approvals.watch(conn)
        log.info("ws client connected", conn=conn.id, client=client.id, mode=client.mode)
        dispatcher = Dispatcher(hub, conn, client)
        async for message in conn.ws:  # ends on close; too-big frames arrive as ERROR
            if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                await dispatcher.handle(message.data)
            elif message.type is WSMsgType.ERROR:
                break
    finally:
        hub.unregister(conn)
        if dispatcher is not None:
            await dispatcher.cancel()


def upgrade_required() -> web.Response:
    return web.json_response(
        {"error": {"message": "this endpoint speaks WebSocket only", "type": "upgrade_required"}},
        status=426,
        headers={"Upgrade": "websocket", "Connection": "Upgrade"},
    )
