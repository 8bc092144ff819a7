"""Pre-populate a session store before its gateway starts: N sessions of one turn each.

Written through the gateway's own store (`SqliteStore.record_turn`), so the rows, indexes and file
layout are exactly what requests would leave behind; driving 100,000 requests through the
gateway instead would take minutes and measure nothing new. Keys have the shape (e) uses
(`agent:fast:openai-user:<user>`), so the seeded rows share the index with the measured ones.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from moltbot.agents.store.records import TurnRecord
from moltbot.agents.store.sqlite import SqliteStore
from moltbot.content import assistant_text, user_text
from moltbot.providers.base import Usage

BATCH = 2000  # calls queued in one loop iteration go to SQLite as one transaction


def seed_turn(index: int, now_ms: int) -> TurnRecord:
    return TurnRecord(
        key=f"agent:fast:openai-user:seed-{index}",
        agent_id="fast",
        run_id=f"chatcmpl-seed-{index}",
        messages=(user_text("Say hello to the benchmark."), assistant_text("tok0 ")),
        status="ok",
        started_at=now_ms - 5,
        ended_at=now_ms,
        model="bench/fast",
        usage=Usage(input_tokens=12, output_tokens=1),
    )


async def seed_store(path: Path, count: int) -> float:
    """Write `count` sessions; returns the seconds it took."""
    started = time.perf_counter()
    store = await SqliteStore.open(path)
    try:
        now_ms = int(time.time() * 1000)
        for first in range(0, count, BATCH):
            last = min(count, first + BATCH)
            await asyncio.gather(
                *(store.record_turn(seed_turn(i, now_ms)) for i in range(first, last))
            )
    finally:
        await store.close()
    return time.perf_counter() - started
