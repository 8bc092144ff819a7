"""A fast fake OpenAI-compatible upstream: a raw asyncio.Protocol HTTP/1.1 server, keep-alive.

`python -m bench.upstream --port P` is one worker; the runner starts several on the same port
(SO_REUSEPORT) and the kernel spreads connections over them, so the upstream is never what
limits a run. Every answer is built once per (model, stream, usage) and reused as bytes: the
per-request work is finding the header end, one `json.loads` and one or a few writes.

`POST /v1/chat/completions`: `stream: true` gives SSE (chunked): a role chunk, N content
chunks (`delay` ms apart when the model id says so), a finish chunk, a usage chunk when
`stream_options.include_usage`, then `[DONE]`; otherwise one JSON `chat.completion`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from dataclasses import dataclass
from typing import Any

from bench import fast_loop
from bench.models import ModelSpec, delta_text, model_spec

HEAD_END = b"\r\n\r\n"
MAX_HEAD_BYTES = 64 * 1024
COMPLETIONS_PATHS = (b"/v1/chat/completions", b"/chat/completions")
PROMPT_TOKENS = 12
CREATED = 1_700_000_000


class BadRequest(Exception):
    """The bytes are not an HTTP/1.1 request this server understands; the connection closes."""


@dataclass(frozen=True, slots=True)
class Request:
    method: bytes
    path: bytes
    body: bytes
    close: bool


@dataclass(frozen=True, slots=True)
class Answer:
    """`first` goes out at once; each of `later` `delay` seconds after the previous write."""

    first: bytes
    later: tuple[bytes, ...] = ()
    delay: float = 0.0


# -- parsing ----------------------------------------------------------------------------------


def take_request(buffer: bytearray) -> Request | None:
    """Remove one complete request from the front of `buffer`; None until one is there."""
    end = buffer.find(HEAD_END)
    if end < 0:
        if len(buffer) > MAX_HEAD_BYTES:
            raise BadRequest("request head too long")
        return None
    head = bytes(buffer[:end])
    lower = head.lower()
    total = end + 4 + content_length(lower)
    if len(buffer) < total:
        return None
    body = bytes(buffer[end + 4 : total])
    del buffer[:total]
    parts = head[: head.find(b"\r\n")].split(b" ")
    if len(parts) != 3:
        raise BadRequest("bad request line")
    return Request(parts[0], parts[1], body, close=b"\r\nconnection: close" in lower)


def content_length(lower_head: bytes) -> int:
    if b"\r\ntransfer-encoding:" in lower_head:
        raise BadRequest("chunked request bodies are not supported")
    start = lower_head.find(b"\r\ncontent-length:")
    if start < 0:
        return 0
    stop = lower_head.find(b"\r\n", start + 2)
    try:
        return int(lower_head[start + 17 : stop if stop > 0 else None])
    except ValueError:
        raise BadRequest("bad content-length") from None


# -- building answers -------------------------------------------------------------------------


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def json_response(status: str, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def error_response(status: str, message: str, code: str) -> bytes:
    error = {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    return json_response(status, dumps({"error": error}))


def usage(chunks: int) -> dict[str, int]:
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": chunks,
        "total_tokens": PROMPT_TOKENS + chunks,
    }


def completion_answer(model: str, spec: ModelSpec) -> Answer:
    text = "".join(delta_text(i) for i in range(spec.chunks))
    body = {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": usage(spec.chunks),
    }
    return Answer(json_response("200 OK", dumps(body)))


def sse_chunk(data: bytes) -> bytes:
    """One SSE frame as one HTTP/1.1 chunk, so the client sees it as soon as it is written."""
    frame = b"data: " + data + b"\n\n"
    return b"%x\r\n" % len(frame) + frame + b"\r\n"


def stream_chunk(model: str, delta: dict[str, str] | None, **extra: Any) -> bytes:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": None}]
    body = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": model,
        "choices": choices,
    }
    if "finish_reason" in extra:
        choices[0]["finish_reason"] = extra.pop("finish_reason")
    body.update(extra)
    return sse_chunk(dumps(body))


STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)


def stream_answer(model: str, spec: ModelSpec, include_usage: bool) -> Answer:
    role = stream_chunk(model, {"role": "assistant", "content": ""})
    deltas = [stream_chunk(model, {"content": delta_text(i)}) for i in range(spec.chunks)]
    tail = stream_chunk(model, {}, finish_reason="stop")
    if include_usage:
        tail += stream_chunk(model, None, usage=usage(spec.chunks))
    tail += sse_chunk(b"[DONE]") + b"0\r\n\r\n"
    if spec.delay_ms <= 0:
        return Answer(STREAM_HEAD + role + b"".join(deltas) + tail)
    later = (*deltas[1:-1], deltas[-1] + tail) if spec.chunks > 1 else ()
    first = STREAM_HEAD + role + deltas[0] + (tail if spec.chunks == 1 else b"")
    return Answer(first, tuple(later), spec.delay_ms / 1000)


class Answers:
    """Every answer built on first use and kept: the model ids in a run are a handful."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, bool, bool], Answer] = {}

    def for_request(self, request: Request) -> tuple[Answer, bool]:
        """(the answer, whether to keep the connection open afterwards)."""
        if request.method != b"POST" or request.path not in COMPLETIONS_PATHS:
            return Answer(error_response("404 Not Found", "no such route", "not_found")), True
        try:
            body = json.loads(request.body)
            model, stream = str(body.get("model", "")), bool(body.get("stream"))
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        except (ValueError, AttributeError):
            return Answer(error_response("400 Bad Request", "bad JSON", "bad_json")), True
        key = (model, stream, include_usage and stream)
        answer = self._cache.get(key)
        if answer is None:
            answer = self._build(*key)
            if answer is None:
                message = f"unknown model {model!r}"
                return Answer(error_response("404 Not Found", message, "model_not_found")), True
            self._cache[key] = answer
        return answer, not request.close

    @staticmethod
    def _build(model: str, stream: bool, include_usage: bool) -> Answer | None:
        spec = model_spec(model)
        if spec is None:
            return None
        return (
            stream_answer(model, spec, include_usage) if stream else completion_answer(model, spec)
        )


# -- serving ----------------------------------------------------------------------------------


class UpstreamProtocol(asyncio.Protocol):
    """One connection: requests in order; a delayed stream holds later requests back."""

    def __init__(self, answers: Answers) -> None:
        self._answers = answers
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()  # the client went away mid-stream
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if not self._busy:
            self._serve_buffered()

    def _serve_buffered(self) -> None:
        while not self._busy and self._transport is not None:
            try:
                request = take_request(self._buffer)
            except BadRequest as exc:
                self._transport.write(error_response("400 Bad Request", str(exc), "bad_request"))
                self._transport.close()
                return
            if request is None:
                return
            answer, keep_open = self._answers.for_request(request)
            self._transport.write(answer.first)
            if answer.later:
                self._busy = True
                self._schedule(answer, 0, keep_open)
            elif not keep_open:
                self._transport.close()

    def _schedule(self, answer: Answer, index: int, keep_open: bool) -> None:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(answer.delay, self._send_later, answer, index, keep_open)

    def _send_later(self, answer: Answer, index: int, keep_open: bool) -> None:
        self._timer = None
        if self._transport is None:
            return
        self._transport.write(answer.later[index])
        if index + 1 < len(answer.later):
            self._schedule(answer, index + 1, keep_open)
            return
        self._busy = False
        if not keep_open:
            self._transport.close()
        elif self._buffer:
            self._serve_buffered()


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    answers = Answers()
    server = await loop.create_server(
        lambda: UpstreamProtocol(answers), host, port, reuse_port=True, backlog=4096
    )
    print("ready", flush=True)  # the runner waits for this line from every worker
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.upstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    if args.host != "127.0.0.1":
        print("bench.upstream: loopback only", file=sys.stderr)
        return 2
    fast_loop.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
