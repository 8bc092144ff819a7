"""A small async client for the gateway's WebSocket protocol (v3), for the CLI and tests.

    client = await GatewayClient.connect("ws://127.0.0.1:18789", token="…")
    try:
        health = await client.request("health")
        final = client.start("agent", {...}, expect_final=True)  # skip the "accepted" answer
        while (event := await client.next_event()) is not None: ...
    finally:
        await client.close()

Responses are matched to requests by id; events queue up (bounded) until read.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from moltbot import __version__

PROTOCOL_VERSION = 3
CONNECT_TIMEOUT_SECONDS = 10.0
REQUEST_TIMEOUT_SECONDS = 30.0
# Events beyond this many unread are dropped, oldest first, so a caller that never reads
# events does not grow memory.
MAX_QUEUED_EVENTS = 10_000
_ENDED = (aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)


class GatewayError(Exception):
    """The gateway answered `ok:false`."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        details: Any = None,
        retryable: bool | None = None,
        retry_after_ms: int | None = None,
        payload: Any = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details
        self.retryable = retryable
        self.retry_after_ms = retry_after_ms
        self.payload = payload

    @classmethod
    def from_frame(cls, frame: dict[str, Any]) -> GatewayError:
        error = frame.get("error") or {}
        return cls(
            str(error.get("code", "UNKNOWN")),
            str(error.get("message", "request failed")),
            details=error.get("details"),
            retryable=error.get("retryable"),
            retry_after_ms=error.get("retryAfterMs"),
            payload=frame.get("payload"),
        )


class GatewayClosed(Exception):
    """The socket closed before an answer came."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(f"connection closed ({code}{': ' + reason if reason else ''})")
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Event:
    name: str
    payload: Any
    seq: int | None


@dataclass(slots=True)
class _Pending:
    future: asyncio.Future[Any]
    expect_final: bool
    accepted: Any = field(default=None)


class GatewayClient:
    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse):
        self._session = session
        self._ws = ws
        self._pending: dict[str, _Pending] = {}
        self._events: asyncio.Queue[Event | None] = asyncio.Queue()
        self._closed: GatewayClosed | None = None
        self._reader = asyncio.create_task(self._read_loop(), name="gateway client reader")
        self.hello: dict[str, Any] = {}

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        token: str | None = None,
        password: str | None = None,
        client_id: str = "cli",
        mode: str = "cli",
        timeout: float = CONNECT_TIMEOUT_SECONDS,
    ) -> GatewayClient:
        """Open the socket and complete the handshake. Raises GatewayError (refused),
        GatewayClosed, aiohttp.ClientError (cannot connect) or TimeoutError."""
        session = aiohttp.ClientSession()
        try:
            ws = await session.ws_connect(
                url, timeout=aiohttp.ClientWSTimeout(ws_close=timeout), max_msg_size=0
            )
            client = cls(session, ws)
        except BaseException:
            await session.close()
            raise
        try:
            client.hello = await client.request(
                "connect", _connect_params(token, password, client_id, mode), timeout=timeout
            )
        except BaseException:
            await client.close()
            raise
        return client

    # -- requests -----------------------------------------------------------------------------

    def start(
        self, method: str, params: Any = None, *, expect_final: bool = False
    ) -> asyncio.Future[Any]:
        """Send a request; the future resolves with its payload or fails with GatewayError /
        GatewayClosed. `expect_final`: skip an `{status:"accepted"}` answer (`agent`)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self._closed is not None:
            future.set_exception(self._closed)
            return future
        request_id = str(uuid.uuid4())
        self._pending[request_id] = _Pending(future, expect_final)
        frame = {"type": "req", "id": request_id, "method": method}
        if params is not None:
            frame["params"] = params
        future.add_done_callback(lambda _: self._pending.pop(request_id, None))
        send = asyncio.ensure_future(self._ws.send_str(json.dumps(frame)))
        send.add_done_callback(lambda done: _fail_on_send_error(done, future))
        return future

    async def request(
        self,
        method: str,
        params: Any = None,
        *,
        timeout: float = REQUEST_TIMEOUT_SECONDS,
        expect_final: bool = False,
    ) -> Any:
        future = self.start(method, params, expect_final=expect_final)
        try:
            async with asyncio.timeout(timeout):
                return await future
        finally:
            future.cancel()

    # -- events -------------------------------------------------------------------------------

    async def next_event(self, timeout: float | None = None) -> Event | None:
        """The next event, or None once the connection has closed (and on timeout)."""
        if self._closed is not None and self._events.empty():
            return None
        try:
            async with asyncio.timeout(timeout):
                return await self._events.get()
        except TimeoutError:
            return None

    def queued_events(self) -> list[Event]:
        """Events received but not read yet, without waiting."""
        events = []
        while not self._events.empty():
            if (event := self._events.get_nowait()) is not None:
                events.append(event)
        return events

    async def events(self) -> AsyncIterator[Event]:
        while (event := await self.next_event()) is not None:
            yield event

    @property
    def closed(self) -> GatewayClosed | None:
        return self._closed

    async def close(self) -> None:
        await self._ws.close()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
        await self._session.close()
        self._finish(GatewayClosed(self._ws.close_code, "closed by client"))

    # -- reading ------------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        reason = ""
        try:
            while True:
                message = await self._ws.receive()
                if message.type is aiohttp.WSMsgType.TEXT:
                    self._dispatch(json.loads(message.data))
                elif message.type is aiohttp.WSMsgType.CLOSE:
                    reason = message.extra or ""  # the server's close reason
                    break
                elif message.type in _ENDED:
                    if isinstance(message.data, Exception):
                        reason = str(message.data)
                    break
        finally:
            self._finish(GatewayClosed(self._ws.close_code, reason))

    def _dispatch(self, frame: dict[str, Any]) -> None:
        if frame.get("type") == "event":
            if self._events.qsize() >= MAX_QUEUED_EVENTS:
                self._events.get_nowait()
            self._events.put_nowait(Event(frame["event"], frame.get("payload"), frame.get("seq")))
            return
        pending = self._pending.get(frame.get("id", ""))
        if frame.get("type") != "res" or pending is None or pending.future.done():
            return
        payload = frame.get("payload")
        if not frame.get("ok"):
            pending.future.set_exception(GatewayError.from_frame(frame))
        elif (
            pending.expect_final
            and isinstance(payload, dict)
            and payload.get("status") == ("accepted")
        ):
            pending.accepted = payload
        else:
            pending.future.set_result(payload)

    def _finish(self, closed: GatewayClosed) -> None:
        if self._closed is not None:
            return
        # The reason the server gave wins over ours.
        if self._ws.close_code is not None and closed.code is None:
            closed = GatewayClosed(self._ws.close_code, closed.reason)
        self._closed = closed
        for pending in list(self._pending.values()):
            if not pending.future.done():
                pending.future.set_exception(closed)
        self._events.put_nowait(None)


def _fail_on_send_error(send: asyncio.Future[None], future: asyncio.Future[Any]) -> None:
    if send.cancelled() or future.done():
        return
    if (exc := send.exception()) is not None:
        future.set_exception(GatewayClosed(None, f"could not send: {exc}"))


def _connect_params(token: str | None, password: str | None, client_id: str, mode: str) -> dict:
    auth = {k: v for k, v in (("token", token), ("password", password)) if v}
    params: dict[str, Any] = {
        "minProtocol": PROTOCOL_VERSION,
        "maxProtocol": PROTOCOL_VERSION,
        "client": {"id": client_id, "version": __version__, "platform": _platform(), "mode": mode},
    }
    if auth:
        params["auth"] = auth
    return params


def _platform() -> str:
    return sys.platform
