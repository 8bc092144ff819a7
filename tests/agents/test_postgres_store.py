"""What only the PostgreSQL backend has: migrations at start-up that several workers may run at
once, its bounded pool, text it cannot hold, a lock that dies with its holder's connection."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import asyncpg
import pytest

from moltbot.agents.store import postgres
from moltbot.agents.store.pg_pool import ConnectionPool
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


async def test_a_v1_database_migrates_and_serves_its_history(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:  # a database as v1 left it, with one turn in it
        await conn.execute(postgres.CREATE_VERSION_TABLE)
        await conn.execute(postgres.MIGRATIONS[0])
        await conn.execute("INSERT INTO moltbot_schema_version VALUES (1, 0)")
        turn = TurnRecord("k", "main", "r1", (user_text("hi"), assistant_text("hello")), "ok", 1, 2)
        await conn.fetchrow(postgres.RECORD_TURN, *postgres.turn_arguments(turn))
    finally:
        await conn.close()
    store = await PostgresStore.open(PostgresConfig(pg_dsn))
    try:
        versions = await fetch(pg_dsn, "SELECT version FROM moltbot_schema_version")
        assert versions == [(v,) for v in range(1, SCHEMA_VERSION + 1)]
        async with store.turn_lock("k"):
            history = await store.prompt_history("k")
        assert [m.text for m in history] == ["hi", "hello"]
    finally:
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


async def test_a_turn_waits_for_the_lock_longer_than_a_statement_may_take(
    pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres, "COMMAND_TIMEOUT_SECONDS", 0.3)
    first = await PostgresStore.open(PostgresConfig(pg_dsn))
    second = await PostgresStore.open(PostgresConfig(pg_dsn))
    try:
        async with first.turn_lock("agent:main:slow"):
            waiting = asyncio.ensure_future(_turn(second, "agent:main:slow"))
            await asyncio.sleep(1.0)  # the earlier turn runs long (a slow model)
            assert not waiting.done()
        await asyncio.wait_for(waiting, 10)
    finally:
        await first.close()
        await second.close()


async def test_the_pool_is_bounded_serves_waiters_and_replaces_broken_connections(
    pg_dsn: str,
) -> None:
    pool = ConnectionPool(pg_dsn, 0, 2, timeout=5)
    try:
        one, two = await pool.take(5), await pool.take(5)
        order: list[str] = []

        async def user(name: str) -> None:
            async with pool.acquire(5) as conn:
                order.append(name)
                await conn.fetchval("SELECT 1")

        waiting = [asyncio.ensure_future(user(n)) for n in ("first", "second", "third")]
        await asyncio.sleep(0.05)
        with pytest.raises(TimeoutError):
            await pool.take(0.05)  # still full
        pool.give_back(one)
        pool.give_back(two, broken=True)  # closed; its place goes to the next waiter
        await asyncio.wait_for(asyncio.gather(*waiting), 10)
        # Places go in order; "second" got the broken one's place and had to connect first.
        assert order[0] == "first" and sorted(order) == ["first", "second", "third"]
        assert two.is_closed() and not one.is_closed()

        async def interrupted() -> None:
            async with pool.acquire(5) as conn:
                await conn.fetchval("SELECT pg_sleep(5)")

        task = asyncio.ensure_future(interrupted())
        await asyncio.sleep(0.2)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        async with pool.acquire(5) as conn:  # a fresh connection, not the interrupted one
            assert await conn.fetchval("SELECT 1") == 1
    finally:
        await asyncio.wait_for(pool.close(), 10)


async def test_a_remembered_history_is_used_only_while_nobody_else_wrote(
    pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[object] = []
    real = postgres.stored_message
    monkeypatch.setattr(postgres, "stored_message", lambda *a: decoded.append(a) or real(*a))
    here = await PostgresStore.open(PostgresConfig(pg_dsn))
    there = await PostgresStore.open(PostgresConfig(pg_dsn))  # another replica
    key = "agent:main:cached"
    try:
        for n in range(1, 4):  # turns here: each reads its history, then writes
            async with here.turn_lock(key):
                await here.prompt_history(key)
                await here.record_turn(turn(key, n))
        decoded.clear()
        async with here.turn_lock(key):
            assert await here.prompt_history(key) == pairs(3)
            assert decoded == []  # from memory: the head had not moved
            await here.record_turn(turn(key, 4))
        async with there.turn_lock(key):
            await there.record_turn(turn(key, 5))
        async with here.turn_lock(key):
            assert await here.prompt_history(key) == pairs(5)  # read again: it moved
        await there.reset(key)
        assert await here.prompt_history(key) == []
    finally:
        await here.close()
        await there.close()


def turn(key: str, n: int) -> TurnRecord:
    return TurnRecord(
        key, "main", f"r{n}", (user_text(f"q{n}"), assistant_text(f"a{n}")), "ok", n, n
    )


def pairs(last: int) -> list[Message]:
    return [m for n in range(1, last + 1) for m in (user_text(f"q{n}"), assistant_text(f"a{n}"))]


async def test_a_history_forgotten_during_its_turn_is_read_again(
    pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The turn's lock comes with the session's head only (the history is remembered); when
    the remembered history goes before the turn reads it, the turn reads it whole, never an
    empty context."""
    monkeypatch.setattr(postgres, "HISTORY_CACHE_SESSIONS", 1)
    store = await PostgresStore.open(PostgresConfig(pg_dsn))
    try:
        for key in ("k", "other"):
            turn = TurnRecord(
                key, "main", f"r-{key}", (user_text("q"), assistant_text("a")), "ok", 1, 2
            )
            await store.record_turn(turn)
        assert [m.text for m in await store.prompt_history("k")] == ["q", "a"]  # remembered
        async with store.turn_lock("k"):
            await store.prompt_history("other")  # pushes "k" out of the memory of one
            history = await store.prompt_history("k")
        assert [m.text for m in history] == ["q", "a"]
    finally:
        await store.close()
