"""A raw protocol probe for tests: send any frame, read frames and closes, all with timeouts."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable
from typing import Any

import aiohttp

from moltbot.client import GatewayClient
from tests.conftest import TOKEN

WAIT = 5.0  # upper bound for anything a test waits for; tests never sleep this long
_ids = itertools.count(1)


def connect_params(token: str | None = TOKEN, **overrides: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "minProtocol": 3,
        "maxProtocol": 3,
        "client": {"id": "test", "version": "1.0", "platform": "linux", "mode": "test"},
    }
    if token is not None:
        params["auth"] = {"token": token}
    params.update(overrides)
    return params


class Closed(AssertionError):
    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"socket closed: {code} {reason!r}")
        self.code = code
        self.reason = reason


class Probe:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []  # events seen while waiting for responses

    async def send(self, frame: Any) -> None:
        await self.ws.send_str(frame if isinstance(frame, str) else json.dumps(frame))

    async def frame(self, timeout: float = WAIT) -> dict[str, Any]:
        """The next frame; raises Closed if the socket closes instead."""
        message = await self.ws.receive(timeout=timeout)
        if message.type is aiohttp.WSMsgType.TEXT:
            return json.loads(message.data)
        # The code the server's close frame carried; the socket's own close_code can differ
        # when the server does not wait for our answer (1006).
        code = message.data if message.type is aiohttp.WSMsgType.CLOSE else self.ws.close_code
        raise Closed(code, message.extra or "")

    async def closed(self, timeout: float = WAIT) -> tuple[int | None, str]:
        """Skip frames until the close; its (code, reason)."""
        async with asyncio.timeout(timeout):
            while True:
                try:
                    await self.frame(timeout)
                except Closed as closed:
                    return closed.code, closed.reason

    async def request(
        self, method: str, params: Any = None, *, timeout: float = WAIT
    ) -> dict[str, Any]:
        """Send a request and return its (first) `res` frame; events go to `self.events`."""
        request_id = f"r{next(_ids)}"
        frame: dict[str, Any] = {"type": "req", "id": request_id, "method": method}
        if params is not None:
            frame["params"] = params
        await self.send(frame)
        return await self.response(request_id, timeout=timeout)

    async def response(self, request_id: str, *, timeout: float = WAIT) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.frame(timeout)
                if frame.get("type") == "res" and frame.get("id") == request_id:
                    return frame
                self.events.append(frame)

    async def hello(self, token: str | None = TOKEN, **overrides: Any) -> dict[str, Any]:
        """Read the challenge, connect; the `res` frame."""
        challenge = await self.frame()
        assert challenge["event"] == "connect.challenge"
        return await self.request("connect", connect_params(token, **overrides))

    async def event(
        self, predicate: Callable[[dict[str, Any]], bool], *, timeout: float = WAIT
    ) -> dict[str, Any]:
        """The first event frame (already seen or new) matching `predicate`."""
        for index, seen in enumerate(self.events):
            if predicate(seen):
                return self.events.pop(index)
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.frame(timeout)
                if frame.get("type") == "event" and predicate(frame):
                    return frame
                self.events.append(frame)


async def wait_for(predicate: Callable[[], bool], timeout: float = WAIT) -> None:
    """Poll `predicate` (server state with no event to wait on) until it holds."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def collect_until(
    client: GatewayClient,
    done: Callable[[Any], bool],
    *,
    timeout: float = WAIT,
) -> list[Any]:
    """Events of `client` up to and including the first for which `done(event)` holds."""
    events = []
    async with asyncio.timeout(timeout):
        while True:
            event = await client.next_event()
            assert event is not None, f"connection closed: {client.closed}"
            events.append(event)
            if done(event):
                return events


def is_agent_end(run_id: str) -> Callable[[Any], bool]:
    def check(event: Any) -> bool:
        payload = event.payload if hasattr(event, "payload") else event.get("payload")
        return (
            (event.name if hasattr(event, "name") else event.get("event")) == "agent"
            and payload["runId"] == run_id
            and payload["stream"] == "lifecycle"
            and payload["data"]["phase"] in ("end", "error")
        )

    return check


def is_chat_end(run_id: str) -> Callable[[Any], bool]:
    def check(event: Any) -> bool:
        return (
            event.name == "chat"
            and event.payload["runId"] == run_id
            and event.payload["state"] in ("final", "aborted", "error")
        )

    return check
