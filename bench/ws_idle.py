"""Scenario (f): many idle WebSocket connections that completed the protocol-3 handshake.

Run as `python -m bench.ws_idle --url ... --token ... --count N` in its own process. It prints
JSON lines: `{"skipped": why}` when the endpoint is not there; else `{"probed": true}` after one
handshake worked, then waits for a line on stdin (the runner takes its baseline). It opens the
connections in two halves; after each it prints `{"connected": n, ...}` (every one got
hello-ok) and waits for a line (the runner reads the gateway's RSS meanwhile). Then it closes
everything and prints `{"closed": n}`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

import aiohttp

HANDSHAKE_TIMEOUT = 10.0
# Handshakes in flight at once: the gateway refuses more than 16 pending per client address
# with close code 1013 ("try again later"), which is then retried a bounded number of times.
BATCH = 8
RETRIES_ON_1013 = 3
RETRY_DELAY = 0.2
MAX_FRAMES_BEFORE_RES = 8


class HandshakeFailed(Exception):
    pass


class TryAgainLater(HandshakeFailed):
    """The server closed with 1013: too many handshakes pending."""


def connect_frame(request_id: str, token: str) -> dict[str, Any]:
    return {
        "type": "req",
        "id": request_id,
        "method": "connect",
        "params": {
            "minProtocol": 3,
            "maxProtocol": 3,
            "client": {"id": "test", "version": "1", "platform": "linux", "mode": "test"},
            "auth": {"token": token},
        },
    }


async def receive_json(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    message = await ws.receive(timeout=HANDSHAKE_TIMEOUT)
    if message.type == aiohttp.WSMsgType.CLOSE and message.data == 1013:
        raise TryAgainLater("closed with 1013")
    if message.type != aiohttp.WSMsgType.TEXT:
        raise HandshakeFailed(f"expected a text frame, got {message.type.name} {message.data!r}")
    frame = json.loads(message.data)
    if not isinstance(frame, dict):
        raise HandshakeFailed(f"expected a JSON object, got {frame!r}")
    return frame


async def open_one(
    session: aiohttp.ClientSession, url: str, token: str, index: int
) -> aiohttp.ClientWebSocketResponse:
    """Open, take the challenge, send connect, wait for hello-ok."""
    ws = await session.ws_connect(url, autoping=True, timeout=aiohttp.ClientWSTimeout(10))
    try:
        challenge = await receive_json(ws)
        if challenge.get("event") != "connect.challenge":
            raise HandshakeFailed(f"expected connect.challenge, got {challenge}")
        request_id = f"connect-{index}"
        await ws.send_json(connect_frame(request_id, token))
        for _ in range(MAX_FRAMES_BEFORE_RES):
            frame = await receive_json(ws)
            if frame.get("type") == "res" and frame.get("id") == request_id:
                payload = frame.get("payload") or {}
                if frame.get("ok") and payload.get("type") == "hello-ok":
                    return ws
                raise HandshakeFailed(f"connect refused: {frame.get('error')}")
        raise HandshakeFailed("no connect response")
    except BaseException:
        await ws.close()
        raise


async def open_with_retries(
    session: aiohttp.ClientSession, url: str, token: str, index: int
) -> aiohttp.ClientWebSocketResponse:
    for _ in range(RETRIES_ON_1013):
        try:
            return await open_one(session, url, token, index)
        except TryAgainLater:
            await asyncio.sleep(RETRY_DELAY)
    return await open_one(session, url, token, index)


async def probe(session: aiohttp.ClientSession, url: str, token: str) -> str | None:
    """Why the WS endpoint is not usable, or None when one handshake works."""
    try:
        ws = await open_one(session, url, token, 0)
    except aiohttp.WSServerHandshakeError as exc:
        return f"WS endpoint not available (HTTP {exc.status} on upgrade)"
    except (aiohttp.ClientError, TimeoutError, HandshakeFailed, ValueError) as exc:
        return f"WS endpoint not available ({exc.__class__.__name__}: {exc})"
    await ws.close()
    return None


async def open_many(
    session: aiohttp.ClientSession, url: str, token: str, count: int, first: int = 0
) -> tuple[list[aiohttp.ClientWebSocketResponse], list[str]]:
    opened: list[aiohttp.ClientWebSocketResponse] = []
    failures: list[str] = []
    for start in range(first, first + count, BATCH):
        batch = range(start, min(first + count, start + BATCH))
        results = await asyncio.gather(
            *(open_with_retries(session, url, token, i + 1) for i in batch),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                failures.append(f"{result.__class__.__name__}: {result}")
            else:
                opened.append(result)
    return opened, failures


async def run(url: str, token: str, count: int) -> None:
    connector = aiohttp.TCPConnector(limit=0)  # the default pool caps at 100 connections
    async with aiohttp.ClientSession(connector=connector) as session:
        reason = await probe(session, url, token)
        if reason is not None:
            print(json.dumps({"skipped": reason}), flush=True)
            return
        loop = asyncio.get_running_loop()
        print(json.dumps({"probed": True}), flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)  # the runner took its baseline
        opened: list[aiohttp.ClientWebSocketResponse] = []
        failures: list[str] = []
        for step in (count // 2, count - count // 2):  # two halves: the runner reads RSS
            more, failed = await open_many(session, url, token, step, first=len(opened))
            opened += more
            failures += failed
            report = {"connected": len(opened), "failed": len(failures), "samples": failures[:5]}
            print(json.dumps(report), flush=True)
            await loop.run_in_executor(None, sys.stdin.readline)  # the runner measured RSS
        await asyncio.gather(*(ws.close() for ws in opened), return_exceptions=True)
        print(json.dumps({"closed": len(opened)}), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ws_idle")
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--count", type=int, default=1000)
    args = parser.parse_args(argv)
    if not args.url.startswith("ws://127.0.0.1:"):
        print("bench.ws_idle: loopback only", file=sys.stderr)
        return 2
    asyncio.run(run(args.url, args.token, args.count))
    return 0


if __name__ == "__main__":
    sys.exit(main())
