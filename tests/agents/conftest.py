"""The two session store backends as one fixture: `target` (where the data lives, and a look
at it behind the store's back), `store` (opened on it) and `clock`."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from moltbot.agents.store.postgres import PostgresStore
from moltbot.agents.store.protocol import SessionStore
from moltbot.agents.store.sqlite import SqliteStore
from moltbot.config.model import PostgresConfig

TABLES = ("messages", "sessions", "responses")


class FakeClock:
    def __init__(self, now: int = 1_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@dataclass
class Target:
    """Where a backend keeps its data, and how to look at it behind the store's back."""

    backend: str
    path: Path | None = None
    dsn: str | None = None

    async def open(self, clock: FakeClock | None = None) -> SessionStore:
        now = clock or FakeClock()
        if self.backend == "sqlite":
            assert self.path is not None
            return await SqliteStore.open(self.path, now_ms=now)
        assert self.dsn is not None
        return await PostgresStore.open(PostgresConfig(self.dsn, 1, 10), now_ms=now)

    async def rows(self, sql: str, *params: object) -> list[tuple[object, ...]]:
        """`sql` in SQLite's spelling (tables `messages`/`sessions`, `?` parameters)."""
        if self.backend == "sqlite":
            assert self.path is not None
            with closing(sqlite3.connect(self.path)) as conn:
                return conn.execute(sql, params).fetchall()
        for table in TABLES:
            sql = sql.replace(f" {table}", f" moltbot_{table}")
        for n in range(len(params)):
            sql = sql.replace("?", f"${n + 1}", 1)
        conn = await asyncpg.connect(self.dsn)
        try:
            return [tuple(r) for r in await conn.fetch(sql, *params)]
        finally:
            await conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    if request.param == "sqlite":
        return Target("sqlite", path=tmp_path / "state" / "sessions.db")
    return Target("postgres", dsn=request.getfixturevalue("pg_dsn"))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(target: Target, clock: FakeClock) -> AsyncIterator[SessionStore]:
    opened = await target.open(clock)
    yield opened
    await opened.close()
