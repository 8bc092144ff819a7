"""Server-sent events on an aiohttp `StreamResponse`: `data: <json>` frames, sent as they come."""

from __future__ import annotations

from aiohttp import web

SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "Connection": "keep-alive",
    "X-Accel-Buffering": "no",  # tell nginx-style proxies not to buffer the stream
}


class EventStream:
    """Prepared once, then one `write()` per frame so each frame leaves at once."""

    def __init__(self, response: web.StreamResponse) -> None:
        self._response = response

    @classmethod
    async def open(cls, request: web.Request) -> EventStream:
        response = web.StreamResponse(status=200, headers=SSE_HEADERS)
        await response.prepare(request)
        return cls(response)

    async def send_json(self, *payloads: bytes) -> None:
        """Frames from already-encoded JSON, in one write (one syscall, one TCP segment)."""
        await self._response.write(b"".join(b"data: %b\n\n" % p for p in payloads))

    async def comment(self, text: str) -> None:
        await self._response.write(f": {text}\n\n".encode())

    async def done(self, *payloads: bytes) -> web.StreamResponse:
        """The last frames, then `[DONE]`, then the end of the response."""
        await self._response.write_eof(
            b"".join(b"data: %b\n\n" % p for p in (*payloads, b"[DONE]"))
        )
        return self._response
