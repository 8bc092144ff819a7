"""The `/healthz` prober of scenario (g): how long the gateway keeps a trivial request waiting
while it works through long answers.

Run as `python -m bench.healthz --port P` in its own process, so the latency it sees is the
gateway's and not a busy client loop's. It prints `ready`, then sends `GET /healthz` every
`--interval` seconds on one keep-alive connection (a new one after a failure) until stdin
closes or `--max-seconds` pass. For each `report` line on stdin it prints, as one JSON line,
what it saw since the previous report: probes, failures, worst and median latency in ms,
and when the slowest were sent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from bench.http1 import ProtocolError, ResponseParser

REQUEST = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
# A probe that waits this long counts as failed, with this as its latency.
PROBE_TIMEOUT = 5.0
CONNECT_TIMEOUT = 5.0
READ_SIZE = 64 * 1024
SLOW_MS = 500.0  # scenario (g)'s target; the report counts probes above it
SLOWEST = 5


@dataclass
class Window:
    started: float = field(default_factory=time.monotonic)
    probes: list[tuple[float, float]] = field(default_factory=list)  # (sent at s, latency ms)
    failures: int = 0
    failure_samples: list[str] = field(default_factory=list)

    def add(self, sent: float, waited_ms: float) -> None:
        self.probes.append((sent - self.started, waited_ms))

    def failed(self, sent: float, waited_ms: float, what: str) -> None:
        self.add(sent, waited_ms)
        self.failures += 1
        if len(self.failure_samples) < 3:
            self.failure_samples.append(what)

    def report(self) -> dict[str, Any]:
        values = [ms for _, ms in self.probes]
        slowest = sorted(self.probes, key=lambda p: p[1], reverse=True)[:SLOWEST]
        return {
            "probes": len(values),
            "failures": self.failures,
            "failure_samples": self.failure_samples,
            "worst_ms": max(values, default=float("nan")),
            "median_ms": statistics.median(values) if values else float("nan"),
            "over_target": sum(1 for v in values if v > SLOW_MS),
            # When the slowest were sent, in seconds into the window: which step stalled.
            "slowest": [[round(at, 2), round(ms, 1)] for at, ms in slowest],
        }


class Prober:
    def __init__(self, port: int, interval: float) -> None:
        self._port = port
        self._interval = interval
        self.window = Window()
        # Held during a probe, so a report waits for the one in flight: a stalled probe
        # belongs to the window it was sent in.
        self.busy = asyncio.Lock()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def run(self, until: float) -> None:
        """Probe on a fixed schedule until the monotonic time `until` (a late probe is followed
        at once by the next, never by a burst)."""
        due = time.monotonic()
        while time.monotonic() < until:
            await self.probe_once()
            due = max(due + self._interval, time.monotonic())
            await asyncio.sleep(due - time.monotonic())

    async def probe_once(self) -> None:
        async with self.busy:
            sent, started = time.monotonic(), time.perf_counter()
            try:
                async with asyncio.timeout(PROBE_TIMEOUT):
                    problem = await self._exchange()
            except (OSError, TimeoutError, ProtocolError, ValueError) as exc:
                problem = f"{exc.__class__.__name__}: {exc}"
            waited_ms = (time.perf_counter() - started) * 1000
            if problem is None:
                self.window.add(sent, waited_ms)
            else:
                self.window.failed(sent, waited_ms, problem)
                self.close()

    async def _exchange(self) -> str | None:
        if self._writer is None:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self._port)
        assert self._reader is not None
        self._writer.write(REQUEST)
        parser = ResponseParser()
        while True:
            data = await self._reader.read(READ_SIZE)
            if not data:
                raise ConnectionError("the gateway closed the connection")
            if parser.feed(data):
                break
        if not parser.keep_alive:
            self.close()
        if parser.status != 200 or b'"ok"' not in parser.body:
            return f"HTTP {parser.status}: {bytes(parser.body[:80])!r}"
        return None

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


async def stdin_lines() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def answer_reports(prober: Prober, commands: asyncio.StreamReader) -> None:
    while line := await commands.readline():
        if line.strip() == b"report":
            async with prober.busy:
                window, prober.window = prober.window, Window()
            print(json.dumps(window.report()), flush=True)


async def main_async(args: argparse.Namespace) -> None:
    prober = Prober(args.port, args.interval)
    commands = await stdin_lines()
    print("ready", flush=True)
    probing = asyncio.create_task(prober.run(time.monotonic() + args.max_seconds))
    answering = asyncio.create_task(answer_reports(prober, commands))
    await asyncio.wait((probing, answering), return_when=asyncio.FIRST_COMPLETED)
    for task in (probing, answering):
        task.cancel()
    prober.close()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.healthz")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--interval", type=float, default=0.05)
    parser.add_argument("--max-seconds", type=float, default=600.0)
    asyncio.run(main_async(parser.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
