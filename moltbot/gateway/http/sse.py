"""Server-sent events on an aiohttp `StreamResponse`: `data: <json>` frames, sent as they come."""

from __future__ import annotations

import json
from typing import Any

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

    async def send(self, data: dict[str, Any]) -> None:
        await self.send_json(json.dumps(data, separators=(",", ":")).encode())

    async def send_json(self, payload: bytes) -> None:
        """One frame from already-encoded JSON."""
        await self._response.write(b"data: %b\n\n" % payload)

    async def comment(self, text: str) -> None:
        await self._response.write(f": {text}\n\n".encode())

    async def done(self) -> web.StreamResponse:
        await self._response.write(b"data: [DONE]\n\n")
        await self._response.write_eof()
        return self._response
