"""The clients of scenario (g): echo requests read to the end and checked, and streams that are
sent and never read. Raw sockets on loopback; every wait has a timeout.
"""

from __future__ import annotations

import array
import asyncio
import fcntl
import json
import socket
import string
import termios
import time
from dataclasses import dataclass
from pathlib import Path

from bench.http1 import ResponseParser, build_request

READ_SIZE = 256 * 1024
CONNECT_TIMEOUT = 10.0
SEND_TIMEOUT = 30.0
DONE_FRAME = b"data: [DONE]"


def words(count: int) -> str:
    """`count` one-letter words, a b c ... z a b ...: two bytes a word, so 20,000 words are a
    40 KB message, and the echo answers with one delta per word."""
    letters = string.ascii_lowercase
    return " ".join(letters[i % len(letters)] for i in range(count))


def echo_request(port: int, token: str, message: str, *, stream: bool) -> bytes:
    body: dict = {"model": "moltbot", "messages": [{"role": "user", "content": message}]}
    if stream:
        body["stream"] = True
    return build_request(
        "127.0.0.1", port, "/v1/chat/completions", body, {"Authorization": f"Bearer {token}"}
    )


@dataclass
class Answer:
    status: int
    seconds: float
    body_bytes: int
    problem: str | None  # why it is not the full echo; None when it is
    frames: int = 0  # SSE data frames (streams)


async def exchange(port: int, request: bytes, timeout: float) -> tuple[ResponseParser, float]:
    """Send one request on a new connection and read the whole response."""
    started = time.perf_counter()
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(request)
            parser = ResponseParser()
            while True:
                data = await reader.read(READ_SIZE)
                if not data:
                    raise ConnectionError("connection closed before the response ended")
                if parser.feed(data):
                    break
        finally:
            writer.close()
    return parser, time.perf_counter() - started


async def echo(port: int, token: str, message: str, *, stream: bool, timeout: float) -> Answer:
    """One echo request read to the end; the answer must repeat `message` exactly."""
    request = echo_request(port, token, message, stream=stream)
    try:
        parser, seconds = await exchange(port, request, timeout)
    except (OSError, TimeoutError, ValueError) as exc:
        return Answer(0, float("nan"), 0, f"{exc.__class__.__name__}: {exc}")
    body = bytes(parser.body)
    answer = Answer(parser.status, seconds, len(body), None)
    if parser.status != 200:
        answer.problem = f"HTTP {parser.status}: {body[:160]!r}"
        return answer
    try:
        text, answer.frames = streamed_text(body) if stream else (whole_text(body), 0)
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        answer.problem = f"unreadable answer: {exc.__class__.__name__}: {exc}"
        return answer
    if text != message:
        answer.problem = f"the echo differs: {len(text)} characters for {len(message)} sent"
    return answer


def whole_text(body: bytes) -> str:
    return json.loads(body)["choices"][0]["message"]["content"]


def streamed_text(body: bytes) -> tuple[str, int]:
    """The content of an SSE stream that must end with [DONE]; (text, data frames)."""
    frames = [f for f in body.split(b"\n\n") if f.startswith(b"data: ")]
    if not frames or frames[-1] != DONE_FRAME:
        raise ValueError("the stream does not end with [DONE]")
    parts = []
    for frame in frames[:-1]:
        chunk = json.loads(frame[6:])
        if "error" in chunk:
            raise ValueError(f"error frame: {chunk['error']}")
        for choice in chunk.get("choices", []):
            parts.append(choice.get("delta", {}).get("content") or "")
    return "".join(parts), len(frames)


class UnreadStreams:
    """Streaming requests sent on sockets that are never read from, held open, then closed."""

    def __init__(self) -> None:
        self.sockets: list[socket.socket] = []

    async def open(self, port: int, request: bytes, count: int) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            self.sockets.append(sock)
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await loop.sock_connect(sock, ("127.0.0.1", port))
        async with asyncio.timeout(SEND_TIMEOUT):
            await asyncio.gather(*(loop.sock_sendall(s, request) for s in self.sockets))

    def queued(self) -> list[int]:
        """Bytes of answer waiting unread in each socket's receive queue: what the gateway
        managed to push before the connection filled up."""
        sizes = []
        for sock in self.sockets:
            buffer = array.array("i", [0])
            fcntl.ioctl(sock.fileno(), termios.FIONREAD, buffer)
            sizes.append(buffer[0])
        return sizes

    def peer_send_queues(self, server_port: int) -> list[int]:
        """Bytes the gateway has written into each connection that the kernel still holds on
        its side (/proc/net/tcp's tx_queue): answer that left the process but not the host."""
        ours = {sock.getsockname()[1]: i for i, sock in enumerate(self.sockets)}
        sizes = [0] * len(self.sockets)
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            local_port, remote_port = (int(a.rsplit(":", 1)[1], 16) for a in fields[1:3])
            if local_port == server_port and remote_port in ours:
                sizes[ours[remote_port]] = int(fields[4].split(":")[0], 16)
        return sizes

    def close(self) -> None:
        """Close with the answers unread (the kernel resets the connections)."""
        for sock in self.sockets:
            sock.close()
        self.sockets = []
