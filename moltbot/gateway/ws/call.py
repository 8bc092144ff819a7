"""What a method handler gets: the request's context, and how methods are declared."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from moltbot.agents.runtime import AgentRuntime
from moltbot.agents.session_keys import canonical_key
from moltbot.config.model import Config
from moltbot.gateway.ws.budget import encoded_size
from moltbot.gateway.ws.connection import Connection
from moltbot.gateway.ws.hub import Hub
from moltbot.gateway.ws.protocol import RpcError, response_frame

Role = Literal["operator"]
Scope = Literal["operator.read", "operator.write", "operator.approvals", "operator.admin"]
READ_SCOPE: Scope = "operator.read"
WRITE_SCOPE: Scope = "operator.write"
APPROVALS_SCOPE: Scope = "operator.approvals"  # answering exec approvals, seeing their events
ADMIN_SCOPE: Scope = "operator.admin"


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """Who is on the other end, as told in `connect` and checked by the handshake."""

    id: str
    mode: str
    version: str
    platform: str
    role: Role
    scopes: frozenset[str]
    conn_id: str
    remote: str
    display_name: str | None = None
    instance_id: str | None = None


@dataclass(slots=True)
class Call:
    hub: Hub
    conn: Connection
    client: ClientInfo
    request_id: str
    method: str
    responded: bool = field(default=False)

    @property
    def runtime(self) -> AgentRuntime:
        return self.hub.runtime

    @property
    def config(self) -> Config:
        return self.hub.config

    def respond(self, ok: bool, payload: Any = None, error: RpcError | None = None) -> None:
        """Answer now (handlers that return normally are answered by the dispatcher)."""
        self.responded = True
        self.conn.send_response(self.request_id, ok, payload, error)

    def room(self, result: Any) -> int:
        """How many bytes `result` may still grow by: this call's answer must fit in one frame
        of at most maxPayload bytes."""
        frame = response_frame(self.request_id, True, result)
        return self.hub.options.max_payload - encoded_size(frame)

    def session_key(self, key: str, agent_id: str | None = None) -> str:
        """A client's key in canonical form; bare keys belong to `agent_id` or the default."""
        return canonical_key(key, agent_id or self.runtime.agents.default_id)


Handler = Callable[[Call, Any], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Method:
    handler: Handler
    scope: Scope


def missing_scope(client: ClientInfo, method: Method | None) -> str | None:
    """The scope the client lacks for `method` (None: allowed). Unknown methods need admin, so
    a non-admin learns nothing about which methods exist."""
    scopes = client.scopes
    if ADMIN_SCOPE in scopes:
        return None
    if method is None or method.scope == ADMIN_SCOPE:
        return ADMIN_SCOPE
    if method.scope == READ_SCOPE:
        return None if scopes & {READ_SCOPE, WRITE_SCOPE} else READ_SCOPE
    if method.scope == APPROVALS_SCOPE:
        return None if APPROVALS_SCOPE in scopes else APPROVALS_SCOPE
    return None if WRITE_SCOPE in scopes else WRITE_SCOPE


def can_approve(client: ClientInfo) -> bool:
    """Whether the client answers exec approvals (and so gets their events)."""
    return bool(client.scopes & {APPROVALS_SCOPE, ADMIN_SCOPE})
