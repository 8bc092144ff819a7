"""`GET /readyz`: should a load balancer send this gateway new work?

200 only while the session store answers a cheap call within `STORE_TIMEOUT_SECONDS` and the
gateway is not draining; 503 otherwise. `/healthz` stays the cheap liveness check. No auth, and
nothing in the answer that a stranger should not see.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from moltbot.gateway.metrics import METRICS_KEY, Metrics
from moltbot.gateway.state import RUNTIME_KEY

STORE_TIMEOUT_SECONDS = 2.0
# A key no session has: looking it up is one primary-key read.
PROBE_KEY = "agent:readyz:probe"
NO_CACHE = {"Cache-Control": "no-store"}


class Readiness:
    def __init__(self) -> None:
        self.draining = False
        # At most one store probe in flight: polls of a hung store wait on the same one
        # instead of queueing a call each.
        self._probe: asyncio.Task[None] | None = None

    def begin_drain(self) -> None:
        self.draining = True

    def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()

    async def store_answers(self, app: web.Application) -> bool:
        if self._probe is None or self._probe.done():
            self._probe = asyncio.create_task(_probe_store(app), name="readiness probe")
        try:
            async with asyncio.timeout(STORE_TIMEOUT_SECONDS):
                await asyncio.shield(self._probe)
        except Exception:  # the store failed, is closed, or took too long
            return False
        return True


async def _probe_store(app: web.Application) -> None:
    metrics: Metrics = app[METRICS_KEY]
    await metrics.timed_store_call("readiness", app[RUNTIME_KEY].store.get(PROBE_KEY))


READINESS_KEY = web.AppKey("readiness", Readiness)


async def readyz(request: web.Request) -> web.Response:
    readiness = request.app[READINESS_KEY]
    if readiness.draining:
        return web.json_response({"status": "draining"}, status=503, headers=NO_CACHE)
    if not await readiness.store_answers(request.app):
        body = {"status": "unavailable", "reason": "session store not answering"}
        return web.json_response(body, status=503, headers=NO_CACHE)
    return web.json_response({"status": "ready"}, headers=NO_CACHE)


def setup_readiness(app: web.Application) -> None:
    """The route, and draining from the start of a graceful stop (`serve` begins it earlier,
    before its shutdown delay)."""
    app[READINESS_KEY] = readiness = Readiness()
    app.router.add_get("/readyz", readyz)

    async def drain(app: web.Application) -> None:
        readiness.begin_drain()

    async def close(app: web.Application) -> None:
        readiness.close()

    app.on_shutdown.append(drain)
    app.on_cleanup.append(close)
