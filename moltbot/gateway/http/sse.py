"""Server-sent events on an aiohttp `StreamResponse`: `data: <json>` frames, or named events
(`event: <name>` then `data: <json>`), sent as they come.

A write waits while the client's socket buffer is full (aiohttp drains past 64 KiB), which is
what holds a run back for a slow reader. A client that takes nothing for `stall_seconds` is cut
off, so a stuck reader cannot hold its handler, its run and its upstream forever.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

# A comment line goes out when a stream was silent this long, so proxies keep it open.
KEEPALIVE_SECONDS = 15.0
# Set on the application before it starts to use another interval (tests use milliseconds).
KEEPALIVE_KEY = web.AppKey("openai_keepalive_seconds", float)
# A streaming client that takes no data for this long is disconnected (tests use less).
STALL_KEY = web.AppKey("openai_stall_seconds", float)

SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "Connection": "keep-alive",
    "X-Accel-Buffering": "no",  # tell nginx-style proxies not to buffer the stream
}


class EventStream:
    """Prepared once, then one `write()` per frame so each frame leaves at once."""

    def __init__(
        self, response: web.StreamResponse, request: web.Request, stall_seconds: float
    ) -> None:
        self._response = response
        self._watch = StallWatch(request.transport, stall_seconds)

    @classmethod
    async def open(cls, request: web.Request, *, stall_seconds: float = 30.0) -> EventStream:
        response = web.StreamResponse(status=200, headers=SSE_HEADERS)
        await response.prepare(request)
        return cls(response, request, stall_seconds)

    async def send_json(self, *payloads: bytes) -> None:
        """Frames from already-encoded JSON, in one write (one syscall, one TCP segment)."""
        await self._write(b"".join(b"data: %b\n\n" % p for p in payloads))

    async def send_events(self, *events: tuple[str, bytes]) -> None:
        """Named events, (name, encoded JSON) each, in one write."""
        await self._write(named_events(events))

    async def comment(self, text: str) -> None:
        await self._write(f": {text}\n\n".encode())

    async def done(self, *payloads: bytes) -> web.StreamResponse:
        """The last frames, then `[DONE]`, then the end of the response."""
        return await self._end(b"".join(b"data: %b\n\n" % p for p in (*payloads, b"[DONE]")))

    async def end_events(self, *events: tuple[str, bytes]) -> web.StreamResponse:
        """The last named events, then the end of the response. No `[DONE]`: a stream of
        named events (the Responses API's) ends with its own terminal event."""
        return await self._end(named_events(events))

    async def _end(self, data: bytes) -> web.StreamResponse:
        try:
            await self._write(data, eof=True)
        finally:
            self.close()
        return self._response

    def close(self) -> None:
        """Stop watching for stalls (the response ended, or its handler failed)."""
        self._watch.stop()

    async def _write(self, data: bytes, *, eof: bool = False) -> None:
        self._watch.writing()
        try:
            await (self._response.write_eof(data) if eof else self._response.write(data))
        finally:
            self._watch.written()


def named_events(events: tuple[tuple[str, bytes], ...]) -> bytes:
    return b"".join(b"event: %b\ndata: %b\n\n" % (name.encode(), data) for name, data in events)


class StallWatch:
    """Aborts the connection when one write has waited `stall_seconds`. One timer per
    stall period, not one per write: a stream writes every token."""

    def __init__(self, transport: asyncio.Transport | None, stall_seconds: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._transport = transport
        self._stall = stall_seconds
        self._since: float | None = None  # when the write in progress began
        self._timer: asyncio.TimerHandle | None = self._loop.call_later(stall_seconds, self._check)

    def writing(self) -> None:
        self._since = self._loop.time()

    def written(self) -> None:
        self._since = None

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        waited = 0.0 if self._since is None else self._loop.time() - self._since
        if waited >= self._stall and self._transport is not None:
            self._timer = None
            self._transport.abort()  # the pending write fails; buffered bytes are dropped
            return
        self._timer = self._loop.call_later(self._stall - waited, self._check)
