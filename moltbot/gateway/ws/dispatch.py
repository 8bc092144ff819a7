"""Requests on an authenticated connection: parse, authorize, run each in its own task.

Handlers run concurrently (answers may come out of order, matched by id), at most
MAX_IN_FLIGHT per connection; past that the connection stops reading until one finishes.
Nothing a client sends after the handshake closes the socket, except a frame above maxPayload;
a frame that is not JSON is answered with INVALID_REQUEST under the id "invalid".
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from moltbot.agents.store.records import SessionStoreError
from moltbot.gateway.ws.call import Call, ClientInfo, Method, missing_scope
from moltbot.gateway.ws.connection import Connection
from moltbot.gateway.ws.hub import Hub
from moltbot.gateway.ws.methods import METHODS
from moltbot.gateway.ws.protocol import (
    FrameError,
    RequestFrame,
    RpcError,
    decode_json,
    invalid_request,
    parse_request,
    unavailable,
)
from moltbot.logs import get_logger

log = get_logger("moltbot.ws")

MAX_IN_FLIGHT = 32
# Request ids come back in every answer, so their length counts against maxPayload; clients
# use UUIDs (36 characters).
MAX_REQUEST_ID_CHARS = 256
# The id of the error answer to a frame whose own id cannot be read.
INVALID_FRAME_ID = "invalid"


class Dispatcher:
    __slots__ = ("_client", "_conn", "_hub", "_in_flight", "_slots")

    def __init__(self, hub: Hub, conn: Connection, client: ClientInfo) -> None:
        self._hub = hub
        self._conn = conn
        self._client = client
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        # Created with the first request: an idle connection keeps no empty set.
        self._in_flight: set[asyncio.Task[None]] | None = None

    async def handle(self, data: str | bytes) -> None:
        try:
            frame = decode_json(data)
        except ValueError as exc:
            # No id can be read from it: answered under the placeholder id, socket kept open.
            self._fail(INVALID_FRAME_ID, invalid_request(f"invalid request frame: {_why(exc)}"))
            return
        try:
            request = parse_request(frame)
        except FrameError as exc:
            self._fail(exc.frame_id or INVALID_FRAME_ID, invalid_request(exc.message))
            return
        method = self._resolve(request)
        if method is None:
            return
        await self._slots.acquire()
        task = asyncio.create_task(self._run(method, request), name=f"ws {request.method}")
        if self._in_flight is None:
            self._in_flight = set()
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    def _resolve(self, request: RequestFrame) -> Method | None:
        """The method to run, or None after answering why not."""
        if len(request.id) > MAX_REQUEST_ID_CHARS:  # every answer repeats it
            limit = f"must NOT have more than {MAX_REQUEST_ID_CHARS} characters"
            self._fail(INVALID_FRAME_ID, invalid_request(f"invalid request frame: at /id: {limit}"))
            return None
        if request.method == "connect":
            self._fail(request.id, invalid_request("connect is only valid as the first request"))
            return None
        method = METHODS.get(request.method)
        if (scope := missing_scope(self._client, method)) is not None:
            self._fail(request.id, invalid_request(f"missing scope: {scope}"))
            return None
        if method is None:
            self._fail(request.id, invalid_request(f"unknown method: {request.method}"))
        return method

    async def _run(self, method: Method, request: RequestFrame) -> None:
        call = Call(self._hub, self._conn, self._client, request.id, request.method)
        try:
            payload = await method.handler(call, request.params)
            if not call.responded:
                call.respond(True, payload)
        except RpcError as exc:
            self._answer_failure(call, exc)
        except SessionStoreError as exc:  # its message is written for users
            self._answer_failure(call, unavailable(str(exc)))
        except Exception:
            log.exception("ws method failed", method=request.method, conn=self._conn.id)
            self._answer_failure(call, unavailable(f"{request.method} failed: internal error"))
        finally:
            self._slots.release()

    def _answer_failure(self, call: Call, error: RpcError) -> None:
        if call.responded:  # e.g. `agent` after its first answer: nothing more to say
            log.warning("ws method failed after answering", method=call.method, error=error.message)
            return
        call.respond(False, error=error)

    def _fail(self, request_id: str, error: RpcError) -> None:
        self._conn.send_response(request_id, False, error=error)

    async def cancel(self) -> None:
        """The socket is gone: stop what its requests were waiting for. Runs they started
        belong to the hub and go on."""
        tasks = list(self._in_flight or ())
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)


def _why(exc: ValueError) -> str:
    """What is wrong with a frame that is not JSON, without echoing the frame."""
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8"
    if isinstance(exc, json.JSONDecodeError):
        return f"not JSON ({exc.msg} at char {exc.pos})"
    return str(exc)  # decode_json's own: nested too deeply
