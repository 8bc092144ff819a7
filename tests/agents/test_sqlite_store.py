"""What only the SQLite backend has: one file (private, WAL, indexed reads), one database
thread with group commits, and the in-memory history of active sessions. The behaviour both
backends share is in test_store_contract.py."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path

import pytest

from moltbot.agents.store import sqlite
from moltbot.agents.store.records import SessionStoreError, Status, TurnRecord
from moltbot.agents.store.sqlite import SqliteStore
from moltbot.content import Message, assistant_text, user_text
from moltbot.providers.base import Usage

REPO_ROOT = Path(__file__).resolve().parents[2]
MINUTE = 60_000


class FakeClock:
    def __init__(self, now: int = 1_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "sessions.db"


@pytest.fixture
async def store(db_path: Path, clock: FakeClock) -> AsyncIterator[SqliteStore]:
    opened = await SqliteStore.open(db_path, now_ms=clock)
    yield opened
    await opened.close()


def make_turn(
    key: str,
    n: int,
    *,
    status: Status = "ok",
    agent_id: str = "main",
    usage: Usage | None = None,
    model: str | None = "local/echo",
    error: str | None = None,
    ended_at: int | None = None,
) -> TurnRecord:
    """Turn `n` of `key`: user says "q<n>", the assistant answers "a<n>"."""
    return TurnRecord(
        key=key,
        agent_id=agent_id,
        run_id=f"run-{key}-{n}",
        messages=(user_text(f"q{n}"), assistant_text(f"a{n}")),
        status=status,
        started_at=n * 1000,
        ended_at=n * 1000 + 500 if ended_at is None else ended_at,
        model=model,
        usage=usage,
        error=error,
    )


def pair(n: int) -> list[Message]:
    return [user_text(f"q{n}"), assistant_text(f"a{n}")]


def query(path: Path, sql: str, *params: object) -> list[tuple[object, ...]]:
    """Read the file behind the store's back, with a connection of our own."""
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql, params).fetchall()


class Gate:
    """Once armed, holds the database thread at its next SQL statement until released, so a
    test can act while a batch is on the thread. Used as the store's trace callback."""

    def __init__(self) -> None:
        self.armed = False
        self.entered = threading.Event()
        self.released = threading.Event()

    def __call__(self, sql: str) -> None:
        if self.armed and not self.released.is_set():
            self.entered.set()
            self.released.wait(timeout=10)


def wal_size(path: Path) -> int:
    return os.stat(f"{path}-wal").st_size


def test_transcript_reads_and_deletes_use_the_index() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    sqlite.migrate(conn)
    statements = [
        (sqlite.LAST_MESSAGES, ("k", 5)),
        (sqlite.LAST_OK_MESSAGES, ("k", 5)),
        (sqlite.DELETE_SESSION, ("k",)),
    ]
    for sql, params in statements:
        steps = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
        assert steps and not any(step.startswith("SCAN") for step in steps), steps
    conn.close()


# --- Files, processes, threads ------------------------------------------------------------------


async def test_files_are_private(db_path: Path) -> None:
    store = await SqliteStore.open(db_path)
    await store.close()
    assert os.stat(db_path.parent).st_mode & 0o777 == 0o700
    assert os.stat(db_path).st_mode & 0o777 == 0o600


CHILD = """
import asyncio, sys
from pathlib import Path
from moltbot.agents.store.sqlite import SqliteStore
from moltbot.agents.store.records import TurnRecord
from moltbot.content import assistant_text, user_text

async def main():
    store = await SqliteStore.open(Path(sys.argv[1]))
    await store.record_turn(TurnRecord(
            "agent:main:k", "main", "run-1", (user_text("hi"), assistant_text("hello")), "ok", 1, 2
        ))
    print("done", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_a_committed_turn_survives_kill_9(db_path: Path) -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, str(db_path), cwd=REPO_ROOT, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert child.stdout is not None
        assert await asyncio.wait_for(child.stdout.readline(), timeout=30) == b"done\n"
        assert wal_size(db_path) > 0  # the turn is in the WAL, not yet in the main file
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()
    assert child.returncode == -signal.SIGKILL

    store = await SqliteStore.open(db_path)
    try:
        assert await store.prompt_history("agent:main:k") == [
            user_text("hi"),
            assistant_text("hello"),
        ]
    finally:
        await store.close()


async def test_concurrent_turns_all_land_in_few_transactions(db_path: Path) -> None:
    statements: list[str] = []
    writer = await SqliteStore.open(db_path, trace=statements.append)
    keys = [f"agent:main:c{i}" for i in range(20)]
    turns = [make_turn(keys[n % 20], n, usage=Usage(1, 2)) for n in range(200)]

    await asyncio.gather(*(writer.record_turn(t) for t in turns))
    await writer.close()

    assert statements.count("COMMIT") <= 3  # schema, then group commits; not one per turn
    store = await SqliteStore.open(db_path)
    for key in keys:
        info = await store.get(key)
        assert info is not None
        assert (info.turns, info.input_tokens, info.total_tokens) == (10, 10, 30)
        stored = await store.messages(key)
        assert len(stored) == 20
        assert [m.role for m in stored] == ["user", "assistant"] * 10
        assert {m.run_id for m in stored} == {t.run_id for t in turns if t.key == key}
    await store.close()


async def test_no_sqlite_call_runs_on_the_event_loop_thread(db_path: Path) -> None:
    seen: list[tuple[int, str]] = []
    store = await SqliteStore.open(
        db_path, trace=lambda sql: seen.append((threading.get_ident(), sql))
    )
    key = "agent:main:th"
    await store.ensure(key, "main")
    await store.record_turn(make_turn(key, 1))
    await store.get(key)
    await store.prompt_history(key)
    await store.messages(key)
    await store.preview([key])
    await store.list(search="th")
    await store.reset(key)
    await store.delete(key)
    await store.close()

    threads = {ident for ident, _ in seen}
    assert len(threads) == 1 and threading.get_ident() not in threads
    statements = " ".join(sql for _, sql in seen)
    for expected in ("CREATE TABLE", "INSERT INTO messages", "ORDER BY updated_at", "DELETE"):
        assert expected in statements


async def test_calls_made_during_a_batch_go_next_and_close_waits_for_them(db_path: Path) -> None:
    gate = Gate()
    store = await SqliteStore.open(db_path, trace=gate)
    gate.armed = True
    first = asyncio.ensure_future(store.record_turn(make_turn("agent:main:1", 1)))
    await asyncio.to_thread(gate.entered.wait, 10)  # the first batch is on the thread now
    second = asyncio.ensure_future(store.record_turn(make_turn("agent:main:2", 2)))
    closing = asyncio.ensure_future(store.close())
    for _ in range(3):  # loop turns, not time: the new tasks queue their calls
        await asyncio.sleep(0)
    gate.released.set()

    one, two, _ = await asyncio.wait_for(asyncio.gather(first, second, closing), timeout=10)

    reopened = await SqliteStore.open(db_path)
    try:
        assert await reopened.get("agent:main:1") == one
        assert await reopened.get("agent:main:2") == two
    finally:
        await reopened.close()


async def test_a_caller_that_stops_waiting_does_not_stall_its_batch(db_path: Path) -> None:
    gate = Gate()
    store = await SqliteStore.open(db_path, trace=gate)
    gate.armed = True
    leaver = asyncio.ensure_future(store.record_turn(make_turn("agent:main:gone", 1)))
    stayer = asyncio.ensure_future(store.record_turn(make_turn("agent:main:here", 2)))
    await asyncio.to_thread(gate.entered.wait, 10)  # both calls are in the batch on the thread
    leaver.cancel()
    gate.released.set()

    info = await asyncio.wait_for(stayer, timeout=10)

    assert leaver.cancelled()
    assert info == await store.get("agent:main:here")
    assert await store.get("agent:main:gone") is not None  # cancelling does not undo a call
    await store.close()


async def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(SessionStoreError, match="session store open failed"):
        await SqliteStore.open(junk)


async def test_a_file_from_a_newer_schema_is_refused(db_path: Path) -> None:
    store = await SqliteStore.open(db_path)
    await store.close()
    with closing(sqlite3.connect(db_path)) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(SessionStoreError, match="schema version 99 is newer"):
        await SqliteStore.open(db_path)


# --- the in-memory history of active sessions ---------------------------------------------------


async def test_a_session_s_next_turn_reads_its_history_from_memory(
    db_path: Path, clock: FakeClock
) -> None:
    selects: list[str] = []

    def trace(statement: str) -> None:
        if "FROM messages" in statement:
            selects.append(statement)

    cached = await SqliteStore.open(db_path, now_ms=clock, trace=trace)
    try:
        await cached.record_turn(make_turn("k", 1))
        assert await cached.prompt_history("k", 4) == pair(1)
        reads = len(selects)
        assert reads > 0  # the first read went to the database
        await cached.record_turn(make_turn("k", 2))
        await cached.record_turn(make_turn("k", 3, status="aborted"))
        await cached.record_turn(make_turn("k", 4))
        from_memory = await cached.prompt_history("k", 4)
        assert len(selects) == reads  # no database read
    finally:
        await cached.close()
    fresh = await SqliteStore.open(db_path, now_ms=clock)
    try:
        from_disk = await fresh.prompt_history("k", 4)
    finally:
        await fresh.close()
    assert from_memory == from_disk == pair(2) + pair(4)
