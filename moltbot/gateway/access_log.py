"""One log line per HTTP request: method, path, status, duration, agent, model and session tag."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from moltbot.logs import get_logger, short_hash

log = get_logger("moltbot.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]


@dataclass(slots=True)
class RequestTags:
    """What a handler learns about a request that the log line should carry."""

    agent: str | None = None
    model: str | None = None  # "provider/model" that answered (or was asked for)
    session_key: str | None = None


REQUEST_TAGS = web.RequestKey("request_tags", RequestTags)


def tags(request: web.Request) -> RequestTags:
    return request[REQUEST_TAGS]


RequestObserver = Callable[[web.Request, int, float], None]


def access_log_middleware(observe: RequestObserver | None = None) -> Middleware:
    """Times every request once: the log line, and `observe(request, status, seconds)` (the
    metrics) with the same figures."""

    @web.middleware
    async def access_log(request: web.Request, handler: Handler) -> web.StreamResponse:
        request[REQUEST_TAGS] = request_tags = RequestTags()
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except (asyncio.CancelledError, ConnectionResetError):
            status = 499  # the client closed the connection first
            raise
        finally:
            elapsed = time.perf_counter() - started
            _write(request, status, elapsed, request_tags)
            if observe is not None:
                observe(request, status, elapsed)

    return access_log


def _write(request: web.Request, status: int, seconds: float, request_tags: RequestTags) -> None:
    fields: dict[str, Any] = {
        "method": request.method,
        "path": request.path,
        "status": status,
        "duration_ms": round(seconds * 1000, 2),
    }
    if request_tags.agent:
        fields["agent"] = request_tags.agent
    if request_tags.model:
        fields["model"] = request_tags.model
    if request_tags.session_key:
        fields["session"] = short_hash(request_tags.session_key)
    log.info("http request", **fields)
