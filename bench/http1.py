"""The client half of HTTP/1.1 the load generator needs: request bytes built once, and an
incremental response parser for Content-Length and chunked bodies (keep-alive, no pipelining).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


class ProtocolError(ValueError):
    """The response is not HTTP/1.1 this parser understands."""


def build_request(
    host: str, port: int, path: str, body: Mapping[str, Any], headers: Mapping[str, str]
) -> bytes:
    """A complete POST with a JSON body, sent as is for every request of a connection."""
    payload = json.dumps(body, separators=(",", ":")).encode()
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(payload)}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


class ResponseParser:
    """Feed bytes of one response; `feed` returns True once it is complete. `reset` before
    the next response on the same connection."""

    __slots__ = ("_buffer", "_chunk_left", "_chunked", "_length", "body", "keep_alive", "status")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.reset()

    def reset(self) -> None:
        self.status = 0
        self.keep_alive = True
        self.body = bytearray()
        self._length = -1
        self._chunked = False
        self._chunk_left = -1  # -1: a size line is next; -2: the final CRLF is next

    def feed(self, data: bytes) -> bool:
        self._buffer += data
        if self.status == 0 and not self._parse_head():
            return False
        return self._feed_chunked() if self._chunked else self._feed_sized()

    def _parse_head(self) -> bool:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(self._buffer[:end]).lower()
        del self._buffer[: end + 4]
        if not head.startswith(b"http/1.1 "):
            raise ProtocolError(f"not an HTTP/1.1 response: {head[:40]!r}")
        self.status = int(head[9:12])
        self.keep_alive = b"\r\nconnection: close" not in head
        self._chunked = b"\r\ntransfer-encoding: chunked" in head
        start = head.find(b"\r\ncontent-length:")
        if start >= 0:
            stop = head.find(b"\r\n", start + 2)
            self._length = int(head[start + 17 : stop if stop > 0 else None])
        elif not self._chunked:
            raise ProtocolError("response has neither Content-Length nor chunked encoding")
        return True

    def _feed_sized(self) -> bool:
        if len(self._buffer) < self._length:
            return False
        self.body = self._buffer[: self._length]
        del self._buffer[: self._length]
        return True

    def _feed_chunked(self) -> bool:
        buffer = self._buffer
        while True:
            if self._chunk_left == -2:
                if len(buffer) < 2:
                    return False
                if buffer[:2] != b"\r\n":
                    raise ProtocolError("trailers are not supported")
                del buffer[:2]
                return True
            if self._chunk_left == -1:
                eol = buffer.find(b"\r\n")
                if eol < 0:
                    return False
                size = int(bytes(buffer[:eol]).split(b";", 1)[0], 16)
                del buffer[: eol + 2]
                self._chunk_left = size if size else -2
                continue
            if len(buffer) < self._chunk_left + 2:
                return False
            self.body += buffer[: self._chunk_left]
            del buffer[: self._chunk_left + 2]
            self._chunk_left = -1

    @property
    def leftover(self) -> int:
        """Bytes received past the end of the response (a protocol error without pipelining)."""
        return len(self._buffer)
