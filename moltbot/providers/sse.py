"""Incremental Server-Sent Events parsing for upstream model streams.

Network chunks do not respect line or frame boundaries, so `SSEParser` buffers bytes and only
interprets complete lines. It keeps just the two SSE fields model APIs use (`event:` and
`data:`); comments (`:` lines) and other fields (`id:`, `retry:`) are dropped.

`StreamDecoder` is the per-API part on top: it turns frames into `StreamItem`s. Decoders are
plain synchronous state machines so that the one async loop reading the socket stays in
`upstream.py` and closing it closes the HTTP response.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

import orjson

from moltbot.providers.base import ProviderError, StreamItem
from moltbot.providers.scrub import MAX_SCAN_CHARS


@dataclass(frozen=True, slots=True)
class SSEFrame:
    event: str  # "" when the frame had no `event:` line
    data: str  # multiple `data:` lines joined with "\n"


class SSEParser:
    """Feed raw bytes in, get complete frames out."""

    def __init__(self) -> None:
        self._buffer = b""
        self._event = ""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[SSEFrame]:
        self._buffer += chunk
        # Split on bytes, not text: a multi-byte UTF-8 character may straddle two chunks.
        *lines, self._buffer = self._buffer.split(b"\n")
        frames: list[SSEFrame] = []
        for raw in lines:
            frame = self._take_line(raw.rstrip(b"\r").decode("utf-8", errors="replace"))
            if frame is not None:
                frames.append(frame)
        return frames

    def finish(self) -> list[SSEFrame]:
        """End of stream: a last frame without its closing blank line still counts, since
        some servers close the connection right after the final `data:` line."""
        frames = self.feed(b"\n") if self._buffer else []
        frame = self._dispatch()
        return [*frames, frame] if frame is not None else frames

    def _take_line(self, line: str) -> SSEFrame | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        return None

    def _dispatch(self) -> SSEFrame | None:
        frame = SSEFrame(self._event, "\n".join(self._data)) if self._data else None
        self._event, self._data = "", []
        return frame


class StreamDecoder(ABC):
    """Bytes of one upstream answer in, stream items out.

    Subclasses set `done` once the API's end marker was seen; nothing after it is read."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.done = False
        self._sse = SSEParser()

    def feed(self, chunk: bytes) -> Iterator[StreamItem]:
        """Items as they decode: those before a failing frame come out before its error."""
        for frame in self._sse.feed(chunk):
            if self.done:
                return
            yield from self.on_frame(frame)

    def finish(self) -> Iterator[StreamItem]:
        """The connection ended: flush the last frame, then check the answer was complete."""
        for frame in self._sse.finish():
            if self.done:
                return
            yield from self.on_frame(frame)
        if not self.done:
            yield from self.on_eof()

    def parse_json(self, data: str | bytes) -> dict[str, object]:
        try:
            parsed = orjson.loads(data)
        except ValueError:
            try:  # orjson refuses lone surrogates; the stdlib parser keeps them (runtime mends)
                parsed = json.loads(data)
            except ValueError:
                parsed = None
        if not isinstance(parsed, dict):
            cut = data[:MAX_SCAN_CHARS]  # the provider's scrubber shortens it further
            snippet = cut if isinstance(cut, str) else cut.decode(errors="replace")
            raise ProviderError("malformed", f"{self.provider}: unparsable data: {snippet!r}")
        return parsed

    @abstractmethod
    def on_frame(self, frame: SSEFrame) -> list[StreamItem]: ...

    @abstractmethod
    def on_eof(self) -> list[StreamItem]:
        """The stream ended before `done`: finish gracefully or raise."""

    @abstractmethod
    def whole_answer(self, document: dict[str, object]) -> list[StreamItem]:
        """Items for a non-streamed (plain JSON) answer."""
