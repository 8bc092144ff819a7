"""The WebSocket endpoint: upgrade, handshake, then read requests until the socket closes."""

from __future__ import annotations

import uuid

from aiohttp import WSMsgType, web

from moltbot.gateway.ws.connection import Connection
from moltbot.gateway.ws.dispatch import Dispatcher
from moltbot.gateway.ws.handshake import handshake
from moltbot.gateway.ws.hub import HUB_KEY
from moltbot.gateway.ws.protocol import CLOSE_SERVICE_RESTART
from moltbot.logs import get_logger

log = get_logger("moltbot.ws")


async def websocket(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB_KEY]
    options = hub.options
    ws = web.WebSocketResponse(
        heartbeat=options.heartbeat,
        max_msg_size=options.max_payload,  # larger frames: aiohttp closes with 1009
        timeout=options.close_timeout,
        compress=False,  # byte counts for the buffer limit stay honest
    )
    if not ws.can_prepare(request).ok:
        return upgrade_required()
    await ws.prepare(request)
    conn = Connection(
        ws,
        transport=request.transport,
        conn_id=str(uuid.uuid4()),
        remote=request.remote or "",
        max_buffered=options.max_buffered_bytes,
        close_timeout=options.close_timeout,
    )
    dispatcher: Dispatcher | None = None
    try:
        if hub.stopping:
            conn.close(CLOSE_SERVICE_RESTART, "service restart")
            return ws
        client = await handshake(request, conn, hub)
        if client is None:
            return ws
        hub.register(conn)
        log.info("ws client connected", conn=conn.id, client=client.id, mode=client.mode)
        dispatcher = Dispatcher(hub, conn, client)
        async for message in ws:  # ends on close; too-big frames arrive as ERROR
            if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                await dispatcher.handle(message.data)
            elif message.type is WSMsgType.ERROR:
                break
    finally:
        hub.unregister(conn)
        if dispatcher is not None:
            await dispatcher.cancel()
        await conn.finish()
        log.info("ws client gone", conn=conn.id, code=ws.close_code or conn.close_code)
    return ws


def upgrade_required() -> web.Response:
    return web.json_response(
        {"error": {"message": "this endpoint speaks WebSocket only", "type": "upgrade_required"}},
        status=426,
        headers={"Upgrade": "websocket", "Connection": "Upgrade"},
    )
