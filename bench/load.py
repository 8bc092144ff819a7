"""The load generator: keep-alive HTTP/1.1 connections on raw asyncio Protocols.

Run as `python -m bench.load`, a worker in its own process so its CPU is not the gateway's.
It talks to the runner in JSON lines: it prints `ready`; for each job line it opens the job's
connections, prints `{"connected": n}`, waits for a `go` line, runs the job and prints the
result. Requests are pre-built bytes; per response it only splits the head, de-chunks the body
and, for streams, notes when the first `"content"` key arrives (time to first token).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from bench import fast_loop
from bench.http1 import ProtocolError, ResponseParser

CONTENT_KEY = b'"content"'
ERROR_FRAME = b'data: {"error"'
DONE_FRAME = b"data: [DONE]\n\n"
CONNECT_TIMEOUT = 10.0
MAX_ERROR_SAMPLES = 5


@dataclass(frozen=True, slots=True)
class Job:
    host: str
    port: int
    requests: tuple[bytes, ...]  # connection i sends requests[i % len(requests)]
    concurrency: int
    count: int
    stream: bool
    cap_seconds: float
    warmup: int  # untimed requests per connection before the clock starts

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Job:
        if raw["host"] != "127.0.0.1":
            raise ValueError("bench.load: loopback only")
        requests = tuple(r.encode("latin-1") for r in raw["requests"])
        fields = {k: raw[k] for k in ("port", "concurrency", "count", "stream", "cap_seconds")}
        return cls(host=raw["host"], requests=requests, warmup=raw.get("warmup", 0), **fields)


@dataclass
class Samples:
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests
    ttft: list[float] = field(default_factory=list)  # seconds, successful streams
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < MAX_ERROR_SAMPLES:
            self.error_samples.append(what)


class Connection(asyncio.Protocol):
    """One keep-alive connection; `send` resolves when the whole response is in."""

    def __init__(self) -> None:
        self.parser = ResponseParser()
        self.transport: asyncio.Transport | None = None
        self.first_content = 0.0
        self._watch = False
        self._tail = b""
        self._waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError(f"connection closed: {exc}"))

    def send(self, request: bytes, watch_content: bool) -> asyncio.Future[None]:
        if self.transport is None:
            raise ConnectionError("not connected")
        self.parser.reset()
        self.first_content, self._watch, self._tail = 0.0, watch_content, b""
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self._waiter

    def data_received(self, data: bytes) -> None:
        if self._watch:
            # The key may straddle two reads, so look at the end of the last one too.
            if CONTENT_KEY in self._tail + data:
                self.first_content, self._watch = time.perf_counter(), False
            self._tail = data[-len(CONTENT_KEY) :]
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        try:
            if self.parser.feed(data):
                waiter.set_result(None)
        except (ProtocolError, ValueError) as exc:
            waiter.set_exception(exc)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def connect(host: str, port: int) -> Connection:
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(CONNECT_TIMEOUT):
        _, protocol = await loop.create_connection(Connection, host, port)
    return protocol


def check_response(parser: ResponseParser, stream: bool) -> str | None:
    """Why the response is not a good answer, or None when it is."""
    if parser.status != 200:
        return f"HTTP {parser.status}: {bytes(parser.body[:120])!r}"
    if parser.leftover:
        return "bytes after the end of the response"
    if stream:
        if not parser.body.endswith(DONE_FRAME):
            return "stream did not end with [DONE]"
        if ERROR_FRAME in parser.body:
            return "error frame in stream"
    elif b'"choices"' not in parser.body:
        return "no choices in the answer"
    return None


class Budget:
    """How many requests may still start: every loop below is bounded by it."""

    def __init__(self, count: int) -> None:
        self.left = count

    def take(self) -> bool:
        if self.left <= 0:
            return False
        self.left -= 1
        return True


async def exchange(conn: Connection, request: bytes, stream: bool) -> tuple[float, float]:
    """Send one request; (latency, time to first content) in seconds."""
    started = time.perf_counter()
    await conn.send(request, stream)
    ended = time.perf_counter()
    ttft = conn.first_content - started if conn.first_content else ended - started
    return ended - started, ttft


async def drive(
    job: Job, conn: Connection, request: bytes, budget: Budget, samples: Samples
) -> None:
    """One connection's share: requests back to back until the budget is spent."""
    while budget.take():
        try:
            latency, ttft = await exchange(conn, request, job.stream)
            problem = check_response(conn.parser, job.stream)
        except (ConnectionError, ProtocolError, ValueError) as exc:
            problem = f"{exc.__class__.__name__}: {exc}"
        if problem is None:
            samples.latencies.append(latency)
            if job.stream:
                samples.ttft.append(ttft)
        else:
            samples.error(problem)
        if problem is not None or not conn.parser.keep_alive or conn.transport is None:
            conn.close()
            conn = await connect(job.host, job.port)


async def warm_up(job: Job, conns: list[Connection]) -> None:
    """Every connection's untimed requests, the connections side by side (one after another,
    (d)'s 200 streams of 320 ms alone would take a minute)."""
    for _ in range(job.warmup):
        requests = (job.requests[i % len(job.requests)] for i in range(len(conns)))
        await asyncio.gather(*(c.send(r, job.stream) for c, r in zip(conns, requests, strict=True)))


async def open_connections(job: Job) -> list[Connection]:
    conns: list[Connection] = []
    try:
        for _ in range(job.concurrency):
            conns.append(await connect(job.host, job.port))
        await warm_up(job, conns)
    except BaseException:
        for conn in conns:
            conn.close()
        raise
    return conns


async def timed_run(job: Job, conns: list[Connection]) -> dict[str, Any]:
    budget, samples = Budget(job.count), Samples()
    cpu_before, started = os.times(), time.perf_counter()
    tasks = [
        asyncio.create_task(drive(job, conn, job.requests[i % len(job.requests)], budget, samples))
        for i, conn in enumerate(conns)
    ]
    done, pending = await asyncio.wait(tasks, timeout=job.cap_seconds)
    wall = time.perf_counter() - started
    cpu_after = os.times()
    for task in pending:
        task.cancel()
    for task in done:
        if task.exception() is not None:
            samples.error(f"connection task failed: {task.exception()!r}")
    unfinished = job.count - budget.left - len(samples.latencies) - samples.errors
    for _ in range(max(0, unfinished)):
        samples.error(f"not finished within the {job.cap_seconds:.0f} s cap")
    cpu = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
    return {
        "completed": len(samples.latencies),
        "errors": samples.errors,
        "error_samples": samples.error_samples,
        "timed_out": bool(pending),
        "wall": wall,
        "cpu": cpu,
        "latencies": [round(x, 7) for x in samples.latencies],  # 0.1 µs is plenty
        "ttft": [round(x, 7) for x in samples.ttft],
    }


async def stdin_reader() -> asyncio.StreamReader:
    """Job lines from the runner, read on the loop so connections stay serviced meanwhile."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def serve_job(raw: dict[str, Any], reader: asyncio.StreamReader) -> dict[str, Any]:
    try:
        job = Job.from_json(raw)
        conns = await open_connections(job)
    except (OSError, TimeoutError, ValueError, KeyError) as exc:
        return {"fatal": f"{exc.__class__.__name__}: {exc}"}
    try:
        print(json.dumps({"connected": len(conns)}), flush=True)
        if not await reader.readline():  # "go"; end of input means the runner is gone
            return {"fatal": "runner went away"}
        return await timed_run(job, conns)
    finally:
        for conn in conns:
            conn.close()


async def worker() -> None:
    reader = await stdin_reader()
    print("ready", flush=True)
    while line := await reader.readline():
        if line.strip():
            result = await serve_job(json.loads(line), reader)
            print(json.dumps(result), flush=True)


def main() -> int:
    fast_loop.run(worker())
    return 0


if __name__ == "__main__":
    sys.exit(main())
