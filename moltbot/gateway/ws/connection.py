"""One WebSocket's outgoing side: a byte-bounded queue, a drain task, the per-socket event seq.

Nothing that produces frames ever awaits the socket. Frames go into this connection's queue and
one drain task hands them to the transport in order. The queue and the task exist only while
something waits to be sent: an idle socket holds neither. `buffered` counts the bytes queued but
not yet handed over; when a client stops reading, the transport pauses, the writer waits, and
`buffered` grows. Past `max_buffered` a droppable event (tick, delta) is skipped, anything else
closes the socket with 1008 "slow consumer" and frees the queue, so a client that does not read
cannot grow the server's memory and never slows anyone else down.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web

from moltbot.gateway.ws.protocol import (
    CLOSE_POLICY_VIOLATION,
    MAX_PAYLOAD_BYTES,
    RpcError,
    close_reason,
    encode,
    event_frame,
    response_frame,
    unavailable,
)
from moltbot.logs import get_logger

log = get_logger("moltbot.ws")


@dataclass(frozen=True, slots=True)
class _Close:
    code: int
    reason: str
    wait_for_peer: bool = True  # for the peer's close frame, up to the close timeout


class Connection:
    __slots__ = (
        "_close_timeout",
        "_closer",
        "_closing",
        "_max_buffered",
        "_max_payload",
        "_queue",
        "_room",
        "_transport",
        "_writer",
        "buffered",
        "id",
        "remote",
        "seq",
        "ws",
    )

    def __init__(
        self,
        ws: web.WebSocketResponse,
        *,
        transport: asyncio.BaseTransport | None,
        conn_id: str,
        remote: str,
        max_buffered: int,
        close_timeout: float,
        max_payload: int = MAX_PAYLOAD_BYTES,
    ) -> None:
        self.ws = ws
        self._transport = transport
        self.id = conn_id
        self.remote = remote
        self.seq = 0  # of the last event sent: per socket, +1 per event, no gaps
        self.buffered = 0
        self._max_buffered = max_buffered
        self._max_payload = max_payload  # as hello-ok advertises it
        self._close_timeout = close_timeout
        # Both only while something is queued: created by _push, dropped once drained.
        self._queue: deque[bytes | _Close] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._closing: _Close | None = None
        self._closer: asyncio.Task[None] | None = None
        self._room: asyncio.Event | None = None  # set once buffered is back under half

    @property
    def open(self) -> bool:
        return self._closing is None and not self.ws.closed

    @property
    def close_code(self) -> int | None:
        return self._closing.code if self._closing else None

    # -- sending ------------------------------------------------------------------------------

    def send_event(
        self,
        name: str,
        payload: Any = None,
        *,
        droppable: bool = False,
        force: bool = False,
        with_seq: bool = True,
    ) -> bool:
        """Queue an event; False if it was not (closed, or dropped for a slow client).

        `force` skips the buffer check (the last words before a close)."""
        if not self._admit(droppable, force):
            return False
        seq = self.seq + 1 if with_seq else None
        data = encode(event_frame(name, payload, seq))
        if seq is not None:
            self.seq = seq  # only once the frame exists: a failed encode leaves no gap
        self._push(data)
        return True

    def send_response(
        self, request_id: str, ok: bool, payload: Any = None, error: RpcError | None = None
    ) -> bool:
        if not self._admit(droppable=False, force=False):
            return False
        data = encode(response_frame(request_id, ok, payload, error))
        if error is not None and len(data) > self._max_payload:
            # An error may quote the request (an unknown method's name, a param's name), so a
            # request near maxPayload would get an answer above it: a short error instead.
            # (Listings fit themselves to the frame; a model's reply is sent whole.)
            log.warning("error answer too large for maxPayload", conn=self.id, bytes=len(data))
            short = unavailable(f"the error answer exceeds maxPayload ({self._max_payload})")
            data = encode(response_frame(request_id, False, error=short))
        self._push(data)
        return True

    def _admit(self, droppable: bool, force: bool) -> bool:
        if not self.open:
            return False
        if force or self.buffered <= self._max_buffered:
            return True
        if not droppable:
            log.warning("closing slow consumer", conn=self.id, buffered=self.buffered)
            self.close(CLOSE_POLICY_VIOLATION, "slow consumer", flush=False)
        return False

    def _push(self, data: bytes) -> None:
        self.buffered += len(data)
        self._enqueue(data)

    def _enqueue(self, item: bytes | _Close) -> None:
        if self._queue is None:
            self._queue = deque()
        self._queue.append(item)
        if self._writer is None:  # one drain task at a time: frames leave in queue order
            self._writer = asyncio.create_task(self._drain(), name=f"ws writer {self.id}")

    @property
    def backed_up(self) -> bool:
        """More than half the send buffer is waiting for the client to read."""
        return self.buffered > self._max_buffered // 2

    async def wait_for_room(self, timeout: float) -> bool:
        """Wait until the client has read the buffer down to half (or the socket closed);
        False if it read too little within `timeout`. Lets a run producing for this socket
        slow down to the client's pace instead of dropping or buffering frames."""
        if not self.backed_up or not self.open:
            return True
        self._room = self._room or asyncio.Event()
        self._room.clear()
        try:
            async with asyncio.timeout(timeout):
                while self.backed_up and self.open:
                    await self._room.wait()
                    self._room.clear()
        except TimeoutError:
            return False
        return True

    def _wake_producer(self) -> None:
        if self._room is not None and (not self.backed_up or not self.open):
            self._room.set()

    # -- closing ------------------------------------------------------------------------------

    def close(self, code: int, reason: str, *, flush: bool = True) -> None:
        """Close with `code`/`reason`: after what is queued (`flush`), or at once, dropping
        the queue (a slow consumer must not keep its backlog in our memory)."""
        if self._closing is not None:
            return
        self._begin_close(_Close(code, close_reason(reason)), flush)

    def drop(self, code: int, reason: str) -> None:
        """Close at once without waiting for the peer's answer: the close frame goes out and
        the socket is gone, now. For a socket pushed out for capacity, whose place is wanted;
        it may be closing already (e.g. after a failed handshake)."""
        if self._closing is None:
            self._begin_close(_Close(code, close_reason(reason), wait_for_peer=False), False)
        elif self._transport is not None:
            self._transport.close()  # stop waiting for its close frame

    def _begin_close(self, close: _Close, flush: bool) -> None:
        self._closing = close
        if flush:
            self._enqueue(self._closing)
            return
        self._queue = None
        self.buffered = 0
        self._wake_producer()
        if self._writer is not None:
            self._writer.cancel()  # it may be stuck waiting for the client to read
        self._closer = asyncio.create_task(self._close_socket(self._closing, drain=False))

    async def finish(self) -> None:
        """Once the socket's reading side is done: wait (bounded) for a close we started to
        flush and complete, then stop the writer."""
        tasks = [t for t in (self._writer, self._closer) if t is not None]
        try:
            if self._closing is not None and tasks:
                await asyncio.wait(tasks, timeout=self._close_timeout * 2)
        finally:
            for task in tasks:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*tasks, return_exceptions=True)

    # -- the writer ---------------------------------------------------------------------------

    async def _drain(self) -> None:
        """Send what is queued, in order; end once the queue is empty (the next frame queued
        starts a new drain task)."""
        try:
            while self._queue:
                item = self._queue.popleft()
                if isinstance(item, _Close):
                    await self._close_socket(item, drain=True)
                    return
                self.buffered -= len(item)
                self._wake_producer()
                await self.ws.send_frame(item, WSMsgType.TEXT)
        except ConnectionError:
            log.debug("websocket gone while writing", conn=self.id)
            self._give_up()
        except Exception:
            log.exception("websocket writer failed", conn=self.id)
            self._give_up()
            if self._transport is not None:
                self._transport.abort()  # the reader side notices and the handler ends
        finally:
            # No await between the empty check and here: nothing can be queued unseen.
            if self._writer is asyncio.current_task():
                self._writer = None
                if not self._queue:
                    self._queue = None

    def _give_up(self) -> None:
        """Nothing more can be written: forget the backlog, refuse new frames."""
        self._closing = self._closing or _Close(1006, "connection lost")
        self._queue = None
        self.buffered = 0
        self._wake_producer()

    async def _close_socket(self, close: _Close, *, drain: bool) -> None:
        # Without waiting, the deadline cuts in right after the close frame is written;
        # aiohttp then closes the transport (flushing that frame).
        timeout = self._close_timeout if close.wait_for_peer else 0
        try:
            async with asyncio.timeout(timeout):
                await self.ws.close(code=close.code, message=close.reason.encode(), drain=drain)
        except (TimeoutError, ConnectionError):
            pass
        finally:
            self._reap_transport()

    def _reap_transport(self) -> None:
        """A peer that never reads keeps a closing transport (and its buffer) alive forever;
        give it the close timeout to read what is left, then drop it. No-op once closed."""
        if self._transport is not None:
            asyncio.get_running_loop().call_later(self._close_timeout, self._transport.abort)
