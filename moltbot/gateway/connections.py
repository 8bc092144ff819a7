"""Connection limits below HTTP: caps on open sockets, and deadlines for slow clients.

aiohttp gives a client an hour (its keep-alive timer) to send a request's headers and no
deadline at all for the body, so a client that sends headers a byte at a time, or a body slowly,
holds a socket and a file descriptor as long as it likes. Per socket, here:

- a request's headers must be complete within `limits.headersTimeoutSeconds` of its first
  byte: otherwise 408 and close. A socket that sends nothing (a client's spare pooled or
  preconnected socket, or one between requests) is idle, not late: it is closed when its place
  is wanted (below), or by aiohttp's keep-alive timer;
- a request body must be complete within `limits.bodyTimeoutSeconds` of its headers: otherwise
  the handler's read fails (408 in the JSON envelope) and the connection is closed;
- at most `limits.maxConnections` sockets are open in all and `limits.maxConnectionsPerIp` from
  one socket address (a trusted proxy counts only in all). At a cap the socket that has been
  idle longest (no request in progress: still sending headers, or kept alive between requests)
  is closed to make room; only when none is idle is the newcomer answered 503 and closed. So a
  flood of slow sockets pushes out its own sockets, not the next real client, even when all of
  them come from 127.0.0.1. WebSocket sockets are busy from their upgrade on; those still in
  their handshake are bounded (and evicted) by ws/admission.py.

aiohttp has no hook for any of this, so `GuardedRequestHandler` is its RequestHandler (the
protocol of one socket) with these additions, made by `GatewayRunner`, an AppRunner whose server
builds them; both `serve()` and the tests' `serve_app` go through `make_runner`. It also
renders aiohttp's own errors (a request its parser rejects, e.g. `get / HTTP/1.1`, answered
before any middleware can run) in the JSON envelope instead of plain text. It uses a few of
aiohttp's private fields (RequestHandler's `_request_count`, `_messages`, `_payload_parser`,
`_force_close`; Server's `_kwargs`, `_loop`); tests/gateway/test_connections.py pins the
behaviour.
"""

from __future__ import annotations

import asyncio
import json
import resource
import time
from http import HTTPStatus
from typing import Any, cast

from aiohttp import web
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

from moltbot.config.model import LimitsConfig
from moltbot.gateway.auth import client_key, normalize_ip
from moltbot.gateway.errors import RequestTimeout, error_body, error_response
from moltbot.logs import get_logger

log = get_logger("moltbot.gateway")

# File descriptors the process needs besides client sockets: session database, upstream
# connections, logs, the event loop.
FD_RESERVE = 256
# Refusals for capacity are logged at most this often (with a count), not once each.
REFUSAL_LOG_INTERVAL_SECONDS = 10.0


def _raw_response(status: HTTPStatus, message: str, code: str, extra: str = "") -> bytes:
    """A whole HTTP response for a socket that has no request object to answer through."""
    body = json.dumps(error_body(message, "invalid_request_error", None, code)).encode()
    head = (
        f"HTTP/1.1 {status.value} {status.phrase}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n"
    )
    return head.encode() + body


AT_CAPACITY = _raw_response(
    HTTPStatus.SERVICE_UNAVAILABLE,
    "too many open connections; try again later",
    "too_many_connections",
    "Retry-After: 1\r\n",
)
HEADERS_TOO_SLOW = _raw_response(
    HTTPStatus.REQUEST_TIMEOUT, "request headers not received in time", "request_timeout"
)


class _Group:
    """Open sockets of one address (or of all): how many, and the idle ones, oldest first."""

    __slots__ = ("count", "idle")

    def __init__(self) -> None:
        self.count = 0
        self.idle: dict[GuardedRequestHandler, None] = {}

    def evict_oldest_idle(self) -> bool:
        for handler in self.idle:
            handler.evict()  # changes `idle`: stop iterating at once
            return True
        return False


class ConnectionGuard:
    """Every open socket of the server, counted in all and per client address."""

    def __init__(self, limits: LimitsConfig, trusted_proxies: frozenset[str]) -> None:
        self.limits = limits
        self._trusted = trusted_proxies
        self._all = _Group()
        self._by_ip: dict[str, _Group] = {}  # only addresses with open sockets
        self._refused = 0
        self._refusal_logged_at = float("-inf")

    def __len__(self) -> int:
        return self._all.count

    def open_from(self, ip: str) -> int:
        group = self._by_ip.get(client_key(ip))
        return group.count if group is not None else 0

    def admit(self, handler: GuardedRequestHandler, ip: str) -> bool:
        """Count a new socket (as idle), making room if a cap is reached; False: refuse it.
        Sockets are counted per client as the auth limit counts them (an IPv6 /64)."""
        capped = ip not in self._trusted
        ip = client_key(ip) if capped else ip
        group = self._by_ip.get(ip) if capped else None
        if group is not None and group.count >= self.limits.max_connections_per_ip:
            if not group.evict_oldest_idle():
                return self._refuse()
        if self._all.count >= self.limits.max_connections and not self._all.evict_oldest_idle():
            return self._refuse()
        if capped:  # (again: an eviction may have emptied and dropped the group)
            group = self._by_ip.setdefault(ip, group or _Group())
        handler._ip = ip
        handler._ip_group = group
        self._all.count += 1
        if group is not None:
            group.count += 1
        self.idle(handler)
        return True

    def _refuse(self) -> bool:
        self._refused += 1
        now = time.monotonic()
        if now - self._refusal_logged_at >= REFUSAL_LOG_INTERVAL_SECONDS:
            log.warning(
                "refusing connections: at capacity",
                refused=self._refused,
                open=self._all.count,
                hint="gateway.limits.maxConnections / maxConnectionsPerIp",
            )
            self._refused = 0
            self._refusal_logged_at = now
        return False

    def idle(self, handler: GuardedRequestHandler) -> None:
        if not handler._idle:
            handler._idle = True
            self._all.idle[handler] = None
            if handler._ip_group is not None:
                handler._ip_group.idle[handler] = None

    def busy(self, handler: GuardedRequestHandler) -> None:
        if handler._idle:
            handler._idle = False
            del self._all.idle[handler]
            if handler._ip_group is not None:
                del handler._ip_group.idle[handler]

    def forget(self, handler: GuardedRequestHandler) -> None:
        """The socket is closing: no longer counted. Later calls do nothing."""
        if handler._ip is None:
            return
        self.busy(handler)
        self._all.count -= 1
        group = handler._ip_group
        if group is not None:
            group.count -= 1
            if not group.count:
                del self._by_ip[handler._ip]
        handler._ip = None
        handler._ip_group = None


def peer_ip(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    host = peer[0] if isinstance(peer, tuple) and peer else ""
    return (normalize_ip(host) or host) if host.startswith("::ffff:") else host


class GuardedRequestHandler(RequestHandler):
    """aiohttp's per-socket protocol, with the caps and deadlines of the module docstring.

    Idle: no handler is running for the socket (it has not sent a whole request yet, is kept
    alive between requests, or is sending the rest of a body that was answered already); only
    an idle socket may be evicted. Not after an upgrade: the socket speaks WebSocket."""

    __slots__ = (
        "_body",
        "_body_timer",
        "_close_when_done",
        "_guard",
        "_headers_timer",
        "_idle",
        "_in_request",
        "_ip",
        "_ip_group",
        "_refused",
    )

    def __init__(self, manager: web.Server, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._ip: str | None = None  # set while counted by the guard
        self._ip_group: _Group | None = None
        self._idle = False  # kept by the guard
        self._refused = False
        self._in_request = False  # from complete headers to the end of the response
        self._headers_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._body: StreamReader | None = None  # while a request's body is still arriving
        self._close_when_done = False

    # -- the socket's life --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._guard.admit(self, peer_ip(transport)):
            self._refused = True
            self._force_close = True  # aiohttp never sees this socket: read nothing from it
            cast(asyncio.Transport, transport).write(AT_CAPACITY)
            transport.close()
            return
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_timers()
        if self._refused:
            return  # never handed to aiohttp
        self._guard.forget(self)
        super().connection_lost(exc)

    def evict(self) -> None:
        """Closed to make room for a newer socket (it is idle: nothing is lost)."""
        self._guard.forget(self)
        self._cancel_timers()
        self.force_close()

    # -- reading: where headers and bodies complete --------------------------------------------

    def data_received(self, data: bytes) -> None:
        count = self._request_count
        super().data_received(data)
        if self._request_count != count:
            self._request_started()
        elif self._body is not None:
            if self._body.is_eof():
                self._cancel_body_timer()
        elif self._idle and self._headers_timer is None and data:
            # The first bytes of a request that is not complete yet.
            self._headers_timer = self._loop.call_later(
                self._guard.limits.headers_timeout_seconds, self._headers_late
            )

    def _request_started(self) -> None:
        """A request's headers are complete (and queued for the handler)."""
        if self._headers_timer is not None:
            self._headers_timer.cancel()
            self._headers_timer = None
        self._in_request = True
        self._guard.busy(self)
        body = self._messages[-1][1] if self._messages else None
        if isinstance(body, StreamReader) and not body.is_eof():
            self._cancel_body_timer()
            self._body = body
            self._body_timer = self._loop.call_later(
                self._guard.limits.body_timeout_seconds, self._body_late
            )

    def _headers_late(self) -> None:
        self._headers_timer = None
        if self.transport is not None and self._idle and self._body is None:
            log.debug("closing a connection: request headers too slow")
            self.transport.write(HEADERS_TOO_SLOW)
            self.force_close()

    def _body_late(self) -> None:
        self._body_timer = None
        body, self._body = self._body, None
        if body is None or body.is_eof():
            return
        log.debug("closing a connection: request body too slow")
        if self._in_request:
            # The handler's read fails with this; the error middleware answers 408.
            seconds = self._guard.limits.body_timeout_seconds
            body.set_exception(RequestTimeout(f"request body not received within {seconds:g} s"))
            self._close_when_done = True
        else:
            self.force_close()  # answered already; only the rest of the body was awaited

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        result = await super().finish_response(request, resp, start_time)
        self._in_request = bool(self._messages)  # pipelined requests are still to come
        if self._close_when_done:
            self.force_close()
        else:
            self._maybe_idle()
        return result

    def _maybe_idle(self) -> None:
        if (
            not self._in_request
            and self._payload_parser is None
            and self._ip is not None
            and self.transport is not None
        ):
            self._guard.idle(self)

    def _cancel_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        self._body = None

    def _cancel_timers(self) -> None:
        if self._headers_timer is not None:
            self._headers_timer.cancel()
            self._headers_timer = None
        self._cancel_body_timer()

    # -- aiohttp's own error answers -----------------------------------------------------------

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """The answer when aiohttp's parser rejects a request, or something escaped every
        middleware: the JSON envelope, one log line, a closed connection."""
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot send an error")
        if status == HTTPStatus.BAD_REQUEST:
            reason = _first_line(message or (str(exc) if exc else ""))
            log.info("malformed http request", status=status, reason=reason)
            response = error_response(
                status, f"malformed HTTP request: {reason}", "invalid_request_error"
            )
        else:
            if isinstance(exc, ConnectionError):
                log.debug("client gone while answering", error=repr(exc))
            else:
                log.error("error outside the error middleware", status=status, exc_info=exc)
            response = error_response(status, _phrase(status), "api_error")
        response.force_close()
        return response


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower()
    except ValueError:
        return "error"


def _first_line(message: str) -> str:
    """`Invalid method encountered:\\n\\n  b'get / ...'` -> `Invalid method encountered`: the
    parser's reason, not the bytes it quotes."""
    line = message.strip().split("\n", 1)[0]
    return line.split(":", 1)[0].strip()[:200] or "unparseable request"


class GatewayServer(web.Server):
    """aiohttp's low-level server (the protocol factory), making guarded handlers."""

    def __init__(self, base: web.Server, guard: ConnectionGuard) -> None:
        super().__init__(
            base.request_handler,
            request_factory=base.request_factory,
            handler_cancellation=base.handler_cancellation,
            **base._kwargs,
        )
        self.guard = guard

    def __call__(self) -> GuardedRequestHandler:
        return GuardedRequestHandler(self, self.guard, loop=self._loop, **self._kwargs)


class GatewayRunner(web.AppRunner):
    """An AppRunner whose sockets are guarded; otherwise the same lifecycle."""

    __slots__ = ("guard",)

    def __init__(self, app: web.Application, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.guard = guard

    async def _make_server(self) -> web.Server:
        return GatewayServer(await super()._make_server(), self.guard)


def raise_open_files_limit(max_connections: int) -> None:
    """Client sockets must not use up the process's file descriptors (systemd's default soft
    limit is 1024): raise the soft limit to what the caps need, within the hard limit, and warn
    when that is not enough."""
    wanted = max_connections + FD_RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    except (ValueError, OSError):
        pass
    if soft < wanted:
        log.warning(
            "the open-file limit is low for gateway.limits.maxConnections",
            limit=soft,
            max_connections=max_connections,
            hint="raise LimitNOFILE (ulimit -n) or lower gateway.limits.maxConnections",
        )
