"""The handshake: the first frame must be a `connect` request that passes protocol, client
and shared-secret checks; the answer is `hello-ok`, or an error and a close.

Shared-secret (token or password) auth only. A device identity is accepted when a secret is
presented but is not verified (protocol §3.3 allows this for a Python core); no pairing.
Every failed handshake counts toward the per-IP auth rate limit shared with HTTP, not only a
wrong secret: otherwise broken handshakes would be free to repeat. A socket closed for capacity
(evicted by a newer handshake, see `admission`) is not a failed handshake and is not counted.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web

from moltbot import __version__
from moltbot.agents.runtime import now_ms
from moltbot.agents.session_keys import main_key
from moltbot.config.model import AuthConfig
from moltbot.gateway.auth import Authenticator
from moltbot.gateway.errors import RateLimited, Unauthorized
from moltbot.gateway.state import AUTH_KEY
from moltbot.gateway.ws.call import ADMIN_SCOPE, ClientInfo
from moltbot.gateway.ws.connect_params import ConnectRequest, parse_connect
from moltbot.gateway.ws.connection import Connection
from moltbot.gateway.ws.hub import Hub
from moltbot.gateway.ws.methods import EVENTS, METHODS
from moltbot.gateway.ws.options import WsOptions
from moltbot.gateway.ws.protocol import (
    CLOSE_POLICY_VIOLATION,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_TOO_BIG,
    PROTOCOL_VERSION,
    FrameError,
    RequestFrame,
    RpcError,
    decode_json,
    invalid_request,
    parse_request,
)
from moltbot.gateway.ws.views import MAIN_KEY


@dataclass(frozen=True, slots=True)
class Peer:
    """Who connected, as the rate limit sees it (`Authenticator.client`)."""

    ip: str
    exemptable: bool  # may get the loopback exemption: a local program, not proxied or a page


class HandshakeFailed(Exception):
    """`error` is answered to the connect request (when there is one to answer), then the
    socket closes with `close_code` (None: it is closed already). `counted`: the rate limit
    has seen this failure already (a wrong secret) or must not (a locked-out client)."""

    def __init__(
        self,
        reason: str,
        close_code: int | None,
        error: RpcError | None = None,
        *,
        counted: bool = False,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.close_code = close_code
        self.error = error
        self.counted = counted

    @classmethod
    def answered(
        cls, error: RpcError, close_code: int, reason: str | None = None, *, counted: bool = False
    ) -> HandshakeFailed:
        return cls(reason or error.message, close_code, error, counted=counted)


# -- the exchange ---------------------------------------------------------------------------


async def handshake(
    request: web.Request, conn: Connection, hub: Hub, peer: Peer
) -> ClientInfo | None:
    """Run the handshake on a fresh socket. None: it failed and the socket is closing."""
    conn.send_event(
        "connect.challenge", {"nonce": str(uuid.uuid4()), "ts": now_ms()}, with_seq=False
    )
    authenticator = request.app[AUTH_KEY]
    try:
        frame = await first_request(conn, hub.options)
    except HandshakeFailed as failed:
        refuse(authenticator, conn, peer, failed, None)
        return None
    if frame is None:
        return None  # the client closed before saying anything: nothing to count
    try:
        client = accept(frame.method, frame.params, request, conn, hub, peer)
    except HandshakeFailed as failed:
        refuse(authenticator, conn, peer, failed, frame)
        return None
    conn.send_response(frame.id, True, hello_ok(hub, client))
    return client


async def first_request(conn: Connection, options: WsOptions) -> RequestFrame | None:
    """The first frame, as a request frame; None if the socket closed first."""
    try:
        # One deadline for the whole wait: pings (answered inside receive) do not extend it.
        async with asyncio.timeout(options.handshake_timeout):
            message = await conn.ws.receive()
    except TimeoutError:
        # Not 1000 (protocol deviation §10.4).
        raise HandshakeFailed("handshake timeout", CLOSE_POLICY_VIOLATION) from None
    if message.type is WSMsgType.ERROR:  # too big for maxPayload: aiohttp closed it (1009)
        raise HandshakeFailed("invalid websocket frame", None)
    if message.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
        return None
    data: str | bytes = message.data
    size = len(data.encode()) if isinstance(data, str) else len(data)
    if size > options.preauth_max_payload:
        raise HandshakeFailed("frame too large before handshake", CLOSE_TOO_BIG)
    try:
        return parse_request(decode_json(data))
    except ValueError:
        raise HandshakeFailed("invalid JSON", CLOSE_POLICY_VIOLATION) from None
    except FrameError:
        raise HandshakeFailed("invalid request frame", CLOSE_POLICY_VIOLATION) from None


def refuse(
    authenticator: Authenticator,
    conn: Connection,
    peer: Peer,
    failed: HandshakeFailed,
    frame: RequestFrame | None,
) -> None:
    if not failed.counted:
        authenticator.note_failure(peer.ip, exemptable=peer.exemptable)
    if failed.error is not None and frame is not None:
        conn.send_response(frame.id, False, error=failed.error)
    if failed.close_code is not None:
        conn.close(failed.close_code, failed.reason)


def accept(
    method: str, params: Any, request: web.Request, conn: Connection, hub: Hub, peer: Peer
) -> ClientInfo:
    """The checks of protocol §3.2, in its order. Raises HandshakeFailed."""
    if method != "connect":
        raise HandshakeFailed.answered(
            invalid_request("invalid handshake: first request must be connect"),
            CLOSE_POLICY_VIOLATION,
            "invalid handshake",
        )
    try:
        connect = parse_connect(params)
    except RpcError as exc:
        raise HandshakeFailed.answered(exc, CLOSE_POLICY_VIOLATION) from None
    if not connect.min_protocol <= PROTOCOL_VERSION <= connect.max_protocol:
        error = invalid_request("protocol mismatch", details={"expectedProtocol": PROTOCOL_VERSION})
        raise HandshakeFailed.answered(error, CLOSE_PROTOCOL_ERROR, "protocol mismatch")
    if connect.role != "operator":
        # Node hosts (role "node") need methods this gateway does not implement.
        message = "invalid role" if connect.role != "node" else "node role is not supported"
        raise HandshakeFailed.answered(invalid_request(message), CLOSE_POLICY_VIOLATION)
    authenticate(request.app[AUTH_KEY], hub.config.gateway.auth, connect, peer)
    client = connect.client
    return ClientInfo(
        id=client["id"],
        mode=client["mode"],
        version=client["version"],
        platform=client["platform"],
        role="operator",
        # A shared secret is full trust: no scopes asked for means all of them.
        scopes=frozenset(connect.scopes or (ADMIN_SCOPE,)),
        conn_id=conn.id,
        remote=peer.ip,
        display_name=client.get("displayName"),
        instance_id=client.get("instanceId"),
    )


# -- shared secret --------------------------------------------------------------------------


def authenticate(
    authenticator: Authenticator, auth: AuthConfig, connect: ConnectRequest, peer: Peer
) -> None:
    """Check the secret of the configured mode only (a token in password mode does not count).
    The authenticator counts a wrong secret itself, and not a locked-out client's attempt."""
    presented = connect.token if auth.mode == "token" else connect.password
    try:
        authenticator.check(presented, peer.ip, exemptable=peer.exemptable)
    except RateLimited as exc:
        seconds = int(exc.headers.get("Retry-After", "1"))
        error = invalid_request(
            f"unauthorized: {exc.message}",
            details={"code": "AUTH_RATE_LIMITED"},
            retryable=True,
            retry_after_ms=seconds * 1000,
        )
        raise HandshakeFailed.answered(error, CLOSE_POLICY_VIOLATION, counted=True) from None
    except Unauthorized:
        message = _unauthorized_message(auth.mode, bool(auth.secret), presented)
        error = invalid_request(message)
        raise HandshakeFailed.answered(error, CLOSE_POLICY_VIOLATION, counted=True) from None


def _unauthorized_message(mode: str, configured: bool, presented: str | None) -> str:
    env = f"MOLTBOT_GATEWAY_{mode.upper()}"
    if not configured:
        return f"unauthorized: gateway {mode} not configured on gateway (set gateway.auth.{mode})"
    if not presented:
        return (
            f"unauthorized: gateway {mode} missing "
            f"(send auth.{mode} in connect, e.g. --{mode} or {env})"
        )
    return f"unauthorized: gateway {mode} mismatch (check gateway.auth.{mode} or {env})"


# -- hello-ok -------------------------------------------------------------------------------


def hello_ok(hub: Hub, client: ClientInfo) -> dict[str, Any]:
    config, options = hub.config, hub.options
    default_agent = hub.runtime.agents.default_id
    return {
        "type": "hello-ok",
        "protocol": PROTOCOL_VERSION,
        "server": {"version": server_version(), "connId": client.conn_id},
        "features": {"methods": list(METHODS), "events": list(EVENTS)},
        "snapshot": {
            "presence": [],
            "health": hub.health.cached or {},
            "stateVersion": {"presence": 1, "health": 1},
            "uptimeMs": hub.uptime_ms(),
            "configPath": str(config.config_path) if config.config_path else None,
            "stateDir": str(config.state_dir),
            "sessionDefaults": {
                "defaultAgentId": default_agent,
                "mainKey": MAIN_KEY,
                "mainSessionKey": main_key(default_agent),
                "scope": "per-sender",
            },
        },
        "policy": {
            "maxPayload": options.max_payload,
            "maxBufferedBytes": options.max_buffered_bytes,
            "tickIntervalMs": options.tick_interval_ms,
        },
    }


def server_version() -> str:
    return os.environ.get("MOLTBOT_VERSION") or __version__ or "dev"
