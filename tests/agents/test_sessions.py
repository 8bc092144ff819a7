"""The session store against real SQLite files in tmp_path."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import pytest

from moltbot.agents import sessions
from moltbot.agents.sessions import (
    SessionInfo,
    SessionStore,
    SessionStoreError,
    TranscriptMessage,
    TurnRecord,
)
from moltbot.content import ImagePart, Message, TextPart, assistant_text, user_text
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
async def store(db_path: Path, clock: FakeClock) -> AsyncIterator[SessionStore]:
    opened = await SessionStore.open(db_path, now_ms=clock)
    yield opened
    await opened.close()


def make_turn(
    key: str,
    n: int,
    *,
    status: sessions.Status = "ok",
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


# --- Turns and the model context ----------------------------------------------------------------


async def test_turn_round_trip(store: SessionStore) -> None:
    turn = make_turn("agent:main:a", 1, usage=Usage(input_tokens=10, output_tokens=3))

    info = await store.record_turn(turn)

    assert info == await store.get("agent:main:a")
    assert (info.key, info.agent_id, info.model) == ("agent:main:a", "main", "local/echo")
    assert (info.created_at, info.updated_at, info.turns, info.aborted_last_run) == (
        1000,
        1500,
        1,
        False,
    )
    assert len(info.session_id) == 36
    assert await store.messages("agent:main:a") == [
        TranscriptMessage(user_text("q1"), "run-agent:main:a-1", 1000, "ok"),
        TranscriptMessage(
            assistant_text("a1"), "run-agent:main:a-1", 1500, "ok", "local/echo", 10, 3, None
        ),
    ]


async def test_updated_at_never_moves_back(store: SessionStore) -> None:
    await store.record_turn(make_turn("agent:main:o", 1, ended_at=9000))
    late_finisher = await store.record_turn(make_turn("agent:main:o", 2, ended_at=4000))
    assert late_finisher.updated_at == 9000


async def test_unknown_key_reads_empty(store: SessionStore) -> None:
    assert await store.get("nope") is None
    assert await store.messages("nope") == []
    assert await store.prompt_history("nope") == []


async def test_prompt_history_has_ok_turns_only_as_whole_pairs_oldest_first(
    store: SessionStore,
) -> None:
    key = "agent:main:h"
    statuses: list[sessions.Status] = ["ok", "error", "ok", "aborted", "ok"]
    for n, status in enumerate(statuses, start=1):
        await store.record_turn(make_turn(key, n, status=status))

    assert await store.prompt_history(key) == pair(1) + pair(3) + pair(5)
    assert await store.prompt_history(key, max_messages=4) == pair(3) + pair(5)
    assert await store.prompt_history(key, max_messages=3) == pair(5)  # never half a pair
    assert await store.prompt_history(key, max_messages=1) == []
    assert await store.prompt_history(key, max_messages=0) == []


async def test_token_totals_add_up_over_turns(store: SessionStore) -> None:
    key = "agent:main:t"
    cached = Usage(input_tokens=100, output_tokens=20, cache_read_tokens=30, cache_write_tokens=5)
    await store.record_turn(make_turn(key, 1, usage=cached))
    await store.record_turn(make_turn(key, 2, usage=Usage(input_tokens=7, output_tokens=2)))
    failed = make_turn(key, 3, status="error", usage=Usage(1, 1), error="boom")
    await store.record_turn(failed)
    info = await store.record_turn(make_turn(key, 4, usage=None))

    assert info.input_tokens == 100 + 7 + 1
    assert info.output_tokens == 20 + 2 + 1
    assert info.total_tokens == (100 + 30 + 5 + 20) + (7 + 2) + (1 + 1)
    assert info.turns == 3  # the failed run spent tokens but is not a completed turn


async def test_aborted_and_failed_turns_are_kept_but_not_prompted(store: SessionStore) -> None:
    key = "agent:main:x"
    await store.record_turn(make_turn(key, 1))
    aborted = await store.record_turn(make_turn(key, 2, status="aborted"))
    assert (aborted.aborted_last_run, aborted.turns) == (True, 1)
    failed = await store.record_turn(make_turn(key, 3, status="error", model=None, error="429"))
    assert (failed.aborted_last_run, failed.model) == (False, "local/echo")  # model kept

    stored = await store.messages(key)
    assert [(m.role, m.content, m.status, m.error) for m in stored[2:]] == [
        ("user", "q2", "aborted", None),
        ("assistant", "a2", "aborted", None),
        ("user", "q3", "error", None),
        ("assistant", "a3", "error", "429"),
    ]
    assert await store.prompt_history(key) == pair(1)

    after = await store.record_turn(make_turn(key, 4))
    assert (after.turns, after.aborted_last_run) == (2, False)
    assert await store.prompt_history(key) == pair(1) + pair(4)


async def test_image_bytes_are_kept_neither_in_the_file_nor_in_the_history_cache(
    store: SessionStore, db_path: Path
) -> None:
    key = "agent:main:img"
    await store.record_turn(make_turn(key, 1))
    assert await store.prompt_history(key) == pair(1)  # now cached
    image = ImagePart("image/png", 4, "iVBORw==")
    turn = replace(
        make_turn(key, 2),
        messages=(Message("user", (TextPart("look"), image)), assistant_text("a pixel")),
    )
    await store.record_turn(turn)
    kept = [
        Message("user", (TextPart("look"), ImagePart("image/png", 4))),
        assistant_text("a pixel"),
    ]
    assert await store.prompt_history(key) == pair(1) + kept  # from the cache
    assert "iVBORw" not in str(query(db_path, "SELECT content, parts FROM messages"))
    await store.close()
    reopened = await SessionStore.open(db_path)
    try:
        assert await reopened.prompt_history(key) == pair(1) + kept  # from the file
    finally:
        await reopened.close()


async def test_a_failing_write_leaves_nothing_behind(store: SessionStore, db_path: Path) -> None:
    key = "agent:main:r"
    before = await store.record_turn(make_turn(key, 1, usage=Usage(5, 5)))
    # A status the schema refuses: the session upsert succeeds, the message insert does not.
    bad = make_turn(key, 2, status="bogus", usage=Usage(50, 50))  # type: ignore[arg-type]
    with pytest.raises(SessionStoreError, match="record_turn failed"):
        await store.record_turn(bad)
    with pytest.raises(SessionStoreError):
        await store.record_turn(make_turn("agent:main:new", 1, status="bogus"))  # type: ignore[arg-type]

    assert await store.get(key) == before
    assert await store.get("agent:main:new") is None
    assert query(db_path, "SELECT count(*) FROM messages") == [(2,)]
    assert (await store.record_turn(make_turn(key, 3))).turns == 2  # the store still works


async def test_a_failing_call_does_not_undo_the_others_of_its_batch(store: SessionStore) -> None:
    bad = make_turn("agent:main:b", 2, status="bogus")  # type: ignore[arg-type]
    good, failed, also_good = await asyncio.gather(
        store.record_turn(make_turn("agent:main:a", 1)),
        store.record_turn(bad),
        store.record_turn(make_turn("agent:main:c", 3)),
        return_exceptions=True,
    )

    assert isinstance(failed, SessionStoreError)
    assert await store.get("agent:main:a") == good
    assert await store.get("agent:main:c") == also_good
    assert await store.get("agent:main:b") is None


async def test_sessions_are_isolated(store: SessionStore) -> None:
    await store.record_turn(make_turn("agent:main:a", 1, usage=Usage(1, 1)))
    await store.record_turn(make_turn("agent:main:b", 2, usage=Usage(9, 9)))

    a = await store.get("agent:main:a")
    b = await store.get("agent:main:b")
    assert a is not None and b is not None
    assert a.session_id != b.session_id
    assert (a.input_tokens, b.input_tokens) == (1, 9)
    assert await store.prompt_history("agent:main:a") == pair(1)
    assert await store.prompt_history("agent:main:b") == pair(2)


# --- Listing and reading -------------------------------------------------------------------------


async def test_list_pages_newest_first_with_total(store: SessionStore) -> None:
    for n in range(1, 6):
        await store.record_turn(make_turn(f"agent:main:s{n}", n))

    page, total = await store.list(limit=2)
    assert ([s.key for s in page], total) == (["agent:main:s5", "agent:main:s4"], 5)
    page, total = await store.list(limit=2, offset=4)
    assert ([s.key for s in page], total) == (["agent:main:s1"], 5)
    page, total = await store.list(limit=2, offset=9)
    assert (page, total) == ([], 5)


async def test_list_filters_by_agent_search_and_activity(
    store: SessionStore, clock: FakeClock
) -> None:
    clock.now = 100 * MINUTE
    await store.record_turn(make_turn("agent:main:Alice", 1, ended_at=99 * MINUTE))
    await store.record_turn(make_turn("agent:ops:alice_2", 2, agent_id="ops", ended_at=50 * MINUTE))
    await store.record_turn(make_turn("agent:ops:bob", 3, agent_id="ops", ended_at=98 * MINUTE))
    await store.record_turn(make_turn("agent:main:a%ce", 4, ended_at=10 * MINUTE))

    async def keys(**filters: object) -> tuple[list[str], int]:
        page, total = await store.list(**filters)  # type: ignore[arg-type]
        return [s.key for s in page], total

    assert await keys(agent_id="ops") == (["agent:ops:bob", "agent:ops:alice_2"], 2)
    assert await keys(search="ALICE") == (["agent:main:Alice", "agent:ops:alice_2"], 2)
    assert await keys(search="a%c") == (["agent:main:a%ce"], 1)  # % is literal
    assert await keys(search="e_") == (["agent:ops:alice_2"], 1)  # _ is literal
    assert await keys(active_minutes=5) == (["agent:main:Alice", "agent:ops:bob"], 2)
    assert await keys(agent_id="ops", active_minutes=60, search="ALI") == (
        ["agent:ops:alice_2"],
        1,
    )
    assert await keys(agent_id="ops", limit=1) == (["agent:ops:bob"], 2)


async def test_messages_returns_the_last_limit_oldest_first(store: SessionStore) -> None:
    for n in range(1, 5):
        await store.record_turn(make_turn("agent:main:m", n))

    last3 = await store.messages("agent:main:m", limit=3)
    assert [m.content for m in last3] == ["a3", "q4", "a4"]
    assert len(await store.messages("agent:main:m")) == 8
    assert await store.messages("agent:main:m", limit=0) == []


async def test_preview_reads_many_keys_and_skips_missing_ones(store: SessionStore) -> None:
    for n in range(1, 4):
        await store.record_turn(make_turn("agent:main:p1", n))
    await store.record_turn(make_turn("agent:main:p2", 9))
    await store.ensure("agent:main:empty", "main")

    previews = await store.preview(
        ["agent:main:p1", "missing", "agent:main:p2", "agent:main:empty"], limit=2
    )

    assert {k: [m.content for m in v] for k, v in previews.items()} == {
        "agent:main:p1": ["q3", "a3"],
        "agent:main:p2": ["q9", "a9"],
        "agent:main:empty": [],
    }


def test_transcript_reads_and_deletes_use_the_index() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    sessions.migrate(conn)
    statements = [
        (sessions.LAST_MESSAGES, ("k", 5)),
        (sessions.LAST_OK_MESSAGES, ("k", 5)),
        (sessions.DELETE_SESSION, ("k",)),
    ]
    for sql, params in statements:
        steps = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
        assert steps and not any(step.startswith("SCAN") for step in steps), steps
    conn.close()


# --- Reset, delete, ensure ----------------------------------------------------------------------


async def test_reset_hides_the_old_transcript_but_keeps_it_on_disk(
    store: SessionStore, db_path: Path, clock: FakeClock
) -> None:
    key = "agent:main:r"
    await store.record_turn(make_turn(key, 1, usage=Usage(4, 4)))
    await store.record_turn(make_turn(key, 2, status="aborted"))
    old = await store.get(key)
    assert old is not None
    clock.now = 7_777_777

    fresh = await store.reset(key)

    assert fresh is not None and fresh == await store.get(key)
    assert fresh.session_id != old.session_id
    assert fresh == replace(
        old,
        session_id=fresh.session_id,
        updated_at=7_777_777,
        input_tokens=0,
        output_tokens=0,
        total_tokens=0,
        turns=0,
        aborted_last_run=False,
    )  # key, agent_id, created_at and model are kept
    assert await store.messages(key) == []
    assert await store.prompt_history(key) == []
    kept = query(db_path, "SELECT count(*) FROM messages WHERE session_id = ?", old.session_id)
    assert kept == [(4,)]

    await store.record_turn(make_turn(key, 3))
    assert await store.prompt_history(key) == pair(3)
    assert await store.reset("unknown") is None


async def test_delete_removes_the_session_and_all_its_messages(
    store: SessionStore, db_path: Path
) -> None:
    await store.record_turn(make_turn("agent:main:d", 1))
    await store.reset("agent:main:d")
    await store.record_turn(make_turn("agent:main:d", 2))
    await store.record_turn(make_turn("agent:main:keep", 3))

    assert await store.delete("agent:main:d") is True

    assert await store.get("agent:main:d") is None
    assert query(db_path, "SELECT DISTINCT session_key FROM messages") == [("agent:main:keep",)]
    assert await store.delete("agent:main:d") is False


async def test_ensure_creates_an_empty_session_once(store: SessionStore, clock: FakeClock) -> None:
    created = await store.ensure("agent:ops:e", "ops")
    sid = created.session_id
    assert created == SessionInfo(
        "agent:ops:e", "ops", sid, 1_000_000, 1_000_000, None, 0, 0, 0, 0, False
    )
    clock.now = 2_000_000
    assert await store.ensure("agent:ops:e", "other") == created

    after = await store.record_turn(make_turn("agent:ops:e", 3_000, agent_id="ops"))
    assert (after.session_id, after.created_at, after.turns) == (created.session_id, 1_000_000, 1)


# --- Files, processes, threads ------------------------------------------------------------------


async def test_a_new_store_on_the_same_file_sees_everything(db_path: Path) -> None:
    first = await SessionStore.open(db_path)
    info = await first.record_turn(make_turn("agent:main:p", 1, usage=Usage(3, 4)))
    await first.close()

    second = await SessionStore.open(db_path)
    try:
        assert await second.get("agent:main:p") == info
        assert await second.prompt_history("agent:main:p") == pair(1)
    finally:
        await second.close()


async def test_files_are_private(db_path: Path) -> None:
    store = await SessionStore.open(db_path)
    await store.close()
    assert os.stat(db_path.parent).st_mode & 0o777 == 0o700
    assert os.stat(db_path).st_mode & 0o777 == 0o600


CHILD = """
import asyncio, sys
from pathlib import Path
from moltbot.agents.sessions import SessionStore, TurnRecord
from moltbot.content import assistant_text, user_text

async def main():
    store = await SessionStore.open(Path(sys.argv[1]))
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

    store = await SessionStore.open(db_path)
    try:
        assert await store.prompt_history("agent:main:k") == [
            user_text("hi"),
            assistant_text("hello"),
        ]
    finally:
        await store.close()


async def test_concurrent_turns_all_land_in_few_transactions(db_path: Path) -> None:
    statements: list[str] = []
    writer = await SessionStore.open(db_path, trace=statements.append)
    keys = [f"agent:main:c{i}" for i in range(20)]
    turns = [make_turn(keys[n % 20], n, usage=Usage(1, 2)) for n in range(200)]

    await asyncio.gather(*(writer.record_turn(t) for t in turns))
    await writer.close()

    assert statements.count("COMMIT") <= 3  # schema, then group commits; not one per turn
    store = await SessionStore.open(db_path)
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
    store = await SessionStore.open(
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


async def test_close_lets_calls_already_made_finish(db_path: Path) -> None:
    store = await SessionStore.open(db_path)
    info, _ = await asyncio.gather(store.record_turn(make_turn("agent:main:z", 1)), store.close())

    reopened = await SessionStore.open(db_path)
    try:
        assert await reopened.get("agent:main:z") == info
    finally:
        await reopened.close()


async def test_calls_made_during_a_batch_go_next_and_close_waits_for_them(db_path: Path) -> None:
    gate = Gate()
    store = await SessionStore.open(db_path, trace=gate)
    gate.armed = True
    first = asyncio.ensure_future(store.record_turn(make_turn("agent:main:1", 1)))
    await asyncio.to_thread(gate.entered.wait, 10)  # the first batch is on the thread now
    second = asyncio.ensure_future(store.record_turn(make_turn("agent:main:2", 2)))
    closing = asyncio.ensure_future(store.close())
    for _ in range(3):  # loop turns, not time: the new tasks queue their calls
        await asyncio.sleep(0)
    gate.released.set()

    one, two, _ = await asyncio.wait_for(asyncio.gather(first, second, closing), timeout=10)

    reopened = await SessionStore.open(db_path)
    try:
        assert await reopened.get("agent:main:1") == one
        assert await reopened.get("agent:main:2") == two
    finally:
        await reopened.close()


async def test_a_caller_that_stops_waiting_does_not_stall_its_batch(db_path: Path) -> None:
    gate = Gate()
    store = await SessionStore.open(db_path, trace=gate)
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


async def test_a_closed_store_refuses_every_call(db_path: Path) -> None:
    store = await SessionStore.open(db_path)
    await store.close()
    await store.close()  # idempotent

    calls = [
        store.get("k"),
        store.prompt_history("k"),
        store.record_turn(make_turn("k", 1)),
        store.list(),
        store.messages("k"),
        store.preview(["k"]),
        store.reset("k"),
        store.delete("k"),
        store.ensure("k", "main"),
    ]
    for call in calls:
        with pytest.raises(SessionStoreError) as caught:
            await call
        assert str(caught.value) == "session store is closed"


async def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(SessionStoreError, match="session store open failed"):
        await SessionStore.open(junk)


async def test_a_file_from_a_newer_schema_is_refused(db_path: Path) -> None:
    store = await SessionStore.open(db_path)
    await store.close()
    with closing(sqlite3.connect(db_path)) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(SessionStoreError, match="schema version 99 is newer"):
        await SessionStore.open(db_path)


# --- the in-memory history of active sessions ---------------------------------------------------


async def test_a_session_s_next_turn_reads_its_history_from_memory(
    db_path: Path, clock: FakeClock
) -> None:
    selects: list[str] = []

    def trace(statement: str) -> None:
        if "FROM messages" in statement:
            selects.append(statement)

    cached = await SessionStore.open(db_path, now_ms=clock, trace=trace)
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
    fresh = await SessionStore.open(db_path, now_ms=clock)
    try:
        from_disk = await fresh.prompt_history("k", 4)
    finally:
        await fresh.close()
    assert from_memory == from_disk == pair(2) + pair(4)


async def test_reset_and_delete_drop_the_remembered_history(store: SessionStore) -> None:
    await store.record_turn(make_turn("a", 1))
    await store.record_turn(make_turn("b", 1))
    assert await store.prompt_history("a") == pair(1)
    assert await store.prompt_history("b") == pair(1)
    await store.reset("a")
    await store.delete("b")
    assert await store.prompt_history("a") == []
    assert await store.prompt_history("b") == []
    await store.record_turn(make_turn("a", 2))
    assert await store.prompt_history("a") == pair(2)


async def test_a_read_racing_a_write_never_leaves_a_stale_history(store: SessionStore) -> None:
    await store.record_turn(make_turn("k", 1))
    for n in range(2, 12):
        read, _ = await asyncio.gather(
            store.prompt_history("k"), store.record_turn(make_turn("k", n))
        )
        assert read in (
            [m for i in range(1, n) for m in pair(i)],
            [m for i in range(1, n + 1) for m in pair(i)],
        )
        assert await store.prompt_history("k") == [m for i in range(1, n + 1) for m in pair(i)]
