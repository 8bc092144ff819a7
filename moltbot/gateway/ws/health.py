"""The `health` summary and its cache (fresh for a minute; concurrent refreshes share one)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from moltbot.agents.runtime import AgentRuntime, now_ms
from moltbot.config.model import Config
from moltbot.gateway.ws.budget import shrink
from moltbot.gateway.ws.views import HIDDEN_KEYS, recent_entry

HEALTH_MAX_AGE_SECONDS = 60.0
RECENT_SESSIONS = 5
# The summary's share of a frame: hello-ok carries it next to the features and paths.
HEALTH_SHARE_OF_FRAME = 0.5
# This gateway has no heartbeat runner: every agent reports it disabled.
HEARTBEAT_OFF: dict[str, Any] = {
    "enabled": False,
    "every": "disabled",
    "everyMs": None,
    "prompt": "",
    "target": "none",
    "ackMaxChars": 0,
}


class HealthMonitor:
    def __init__(
        self,
        build: Callable[[], Awaitable[dict[str, Any]]],
        clock: Callable[[], float] = time.monotonic,
        max_age: float = HEALTH_MAX_AGE_SECONDS,
    ) -> None:
        self._build = build
        self._clock = clock
        self._max_age = max_age
        self._cached: tuple[float, dict[str, Any]] | None = None
        self._refreshing: asyncio.Future[dict[str, Any]] | None = None

    @property
    def cached(self) -> dict[str, Any] | None:
        return self._cached[1] if self._cached else None

    async def get(self, probe: bool = False) -> dict[str, Any]:
        if not probe and self._cached and self._clock() - self._cached[0] < self._max_age:
            return self._cached[1]
        return await self.refresh()

    async def refresh(self) -> dict[str, Any]:
        if self._refreshing is None:
            self._refreshing = asyncio.ensure_future(self._run())
        # Shielded: one caller going away must not cancel the refresh the others wait for.
        return await asyncio.shield(self._refreshing)

    async def _run(self) -> dict[str, Any]:
        try:
            summary = await self._build()
            self._cached = (self._clock(), summary)
            return summary
        finally:
            self._refreshing = None


async def build_health(runtime: AgentRuntime, config: Config, max_bytes: int) -> dict[str, Any]:
    """The summary, at most `max_bytes` long: it goes out whole in every hello-ok, so with many
    agents the recent-session samples are dropped, the last agent's first."""
    summary = await _summary(runtime, config)
    agents = summary["agents"]
    recents = [a["sessions"]["recent"] for a in reversed(agents)] + [summary["sessions"]["recent"]]
    shrink(summary, recents, max_bytes)
    return summary


async def _summary(runtime: AgentRuntime, config: Config) -> dict[str, Any]:
    started = time.monotonic()
    now = now_ms()
    path = config.session_store_location
    agents = []
    for agent in runtime.agents:
        recent, count = await _recent(runtime, now, agent.id)
        entry: dict[str, Any] = {"agentId": agent.id, "isDefault": agent.is_default}
        if agent.name:
            entry["name"] = agent.name
        entry["heartbeat"] = HEARTBEAT_OFF
        entry["sessions"] = {"path": path, "count": count, "recent": recent}
        agents.append(entry)
    recent, count = await _recent(runtime, now, None)
    return {
        "ok": True,
        "ts": now,
        "durationMs": round((time.monotonic() - started) * 1000),
        "channels": {},
        "channelOrder": [],
        "channelLabels": {},
        "heartbeatSeconds": 0,
        "defaultAgentId": runtime.agents.default_id,
        "agents": agents,
        "sessions": {"path": path, "count": count, "recent": recent},
    }


async def _recent(
    runtime: AgentRuntime, now: int, agent_id: str | None
) -> tuple[list[dict[str, Any]], int]:
    # Two extra rows: `global` and `unknown` are not shown but may be among the newest.
    rows, count = await runtime.store.list(agent_id=agent_id, limit=RECENT_SESSIONS + 2)
    shown = [recent_entry(row, now) for row in rows if row.key not in HIDDEN_KEYS]
    return shown[:RECENT_SESSIONS], count
