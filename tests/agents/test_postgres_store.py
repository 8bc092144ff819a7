"""What only the PostgreSQL backend has: migrations at start-up that several workers may run at
once, its bounded pool, text it cannot hold, a lock that dies with its holder's connection."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import asyncpg
import pytest

from moltbot.agents.store.postgres import SCHEMA_VERSION, PostgresStore, session_lock_id
from moltbot.agents.store.records import SessionStoreError, TurnRecord
from moltbot.config.model import PostgresConfig
from moltbot.content import Message, TextPart, assistant_text, user_text


async def fetch(dsn: str, sql: str) -> list[tuple[object, ...]]:
    conn = await asyncpg.connect(dsn)
    try:
        return [tuple(row) for row in await conn.fetch(sql)]
    finally:
        await conn.close()


async def test_workers_starting_together_migrate_once(pg_dsn: str) -> None:
    stores = await asyncio.gather(*(PostgresStore.open(PostgresConfig(pg_dsn)) for _ in range(6)))
    try:
        versions = await fetch(pg_dsn, "SELECT version FROM moltbot_schema_version")
        assert versions == [(v,) for v in range(1, SCHEMA_VERSION + 1)]
        again = await PostgresStore.open(PostgresConfig(pg_dsn))  # idempotent
        await again.close()
        assert await fetch(pg_dsn, "SELECT count(*) FROM moltbot_schema_version") == [
            (SCHEMA_VERSION,)
        ]
    finally:
        for store in stores:
            await store.close()


async def test_a_database_from_a_newer_schema_is_refused(pg_dsn: str) -> None:
    store = await PostgresStore.open(PostgresConfig(pg_dsn))
    await store.close()
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute("INSERT INTO moltbot_schema_version VALUES (99, 0)")
    finally:
        await conn.close()
    with pytest.raises(SessionStoreError, match="schema version 99 is newer than this build's"):
        await PostgresStore.open(PostgresConfig(pg_dsn))


async def test_an_unreachable_server_is_one_clear_error() -> None:
    with socket_that_refuses() as port:
        config = PostgresConfig(f"postgresql://postgres:pw@127.0.0.1:{port}/x", 1, 2)
        with pytest.raises(SessionStoreError, match="session store open failed") as caught:
            await PostgresStore.open(config)
    assert "pw" not in str(caught.value)


@contextlib.contextmanager
def socket_that_refuses() -> Iterator[int]:
    """A port nothing listens on (bound, never listening: connecting is refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


async def test_the_store_opens_at_most_its_pool_max_and_one_more(pg_dsn: str) -> None:
    store = await PostgresStore.open(PostgresConfig(pg_dsn, 1, 3))
    try:
        await asyncio.gather(*(store.list() for _ in range(50)))
        name = pg_dsn.rsplit("/", 1)[1].split("?")[0]
        rows = await fetch(
            pg_dsn,
            f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{name}'"
            " AND pid <> pg_backend_pid()",
        )
        assert rows[0][0] <= 3 + 1  # the pool, and the connection listening for run notices
    finally:
        await store.close()


async def test_nul_characters_survive_in_messages(pg_dsn: str) -> None:
    store = await PostgresStore.open(PostgresConfig(pg_dsn))
    try:
        reply = Message("assistant", (TextPart("a\x00b"),))
        turn = TurnRecord("k", "main", "r1", (user_text("q\x00"), reply), "ok", 1, 2)
        await store.record_turn(turn)
        assert await store.prompt_history("k") == [user_text("q\x00"), reply]
        stored = await store.messages("k")
        assert stored[1].message == reply
    finally:
        await store.close()


async def test_a_lock_holder_s_lost_connection_frees_the_session(pg_dsn: str) -> None:
    """What kill -9 of a worker does to its connections: the server ends the session, and the
    advisory lock with it."""
    holder = await asyncpg.connect(pg_dsn)
    await holder.execute("SELECT pg_advisory_lock($1)", session_lock_id("agent:main:x"))
    store = await PostgresStore.open(PostgresConfig(pg_dsn))
    try:
        waiting = asyncio.ensure_future(_turn(store, "agent:main:x"))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        holder.terminate()  # the socket closes, as when the process is killed
        await asyncio.wait_for(waiting, 10)
    finally:
        await store.close()


async def _turn(store: PostgresStore, key: str) -> None:
    async with store.turn_lock(key):
        await store.record_turn(
            TurnRecord(key, "main", "r", (user_text("q"), assistant_text("a")), "ok", 1, 2)
        )
