"""The session store's responses (SQLite schema v3, a table in PostgreSQL too): what
previous_response_id and GET /v1/responses/{id} read, on both backends; the SQLite
migration and index use at the end."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from moltbot.agents.store import sqlite as sessions
from moltbot.agents.store.protocol import SessionStore
from moltbot.agents.store.records import ResponseRecord
from moltbot.agents.store.sqlite import SqliteStore
from tests.agents.conftest import FakeClock, Target
from tests.agents.test_sqlite_store import make_turn, query

DAY = 24 * 3600 * 1000


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "sessions.db"


def record(response_id: str, key: str, clock: FakeClock, *, days: int = 30) -> ResponseRecord:
    return ResponseRecord(response_id, key, clock.now, clock.now + days * DAY, '{"id": "x"}')


async def test_a_saved_response_is_found_with_its_session(
    store: SessionStore, clock: FakeClock
) -> None:
    await store.record_turn(make_turn("k", 1))
    assert await store.save_response(record("resp_1", "k", clock)) is True
    found = await store.get_response("resp_1")
    assert found is not None
    assert (found.id, found.session_key, found.body) == ("resp_1", "k", '{"id": "x"}')
    assert (found.created_at, found.expires_at) == (clock.now, clock.now + 30 * DAY)
    assert found.is_latest and not found.reset_since and found.turns_since == 0
    assert await store.get_response("resp_other") is None


async def test_later_ok_turns_and_resets_are_counted(store: SessionStore, clock: FakeClock) -> None:
    await store.record_turn(make_turn("k", 1))
    await store.save_response(record("resp_1", "k", clock))
    await store.record_turn(make_turn("k", 2, status="error"))  # failed turns do not count
    assert (await store.get_response("resp_1")).is_latest  # type: ignore[union-attr]
    await store.record_turn(make_turn("k", 3))
    later = await store.get_response("resp_1")
    assert later is not None and later.turns_since == 1 and not later.is_latest
    await store.reset("k")
    reset = await store.get_response("resp_1")
    assert reset is not None and reset.reset_since and not reset.is_latest


async def test_no_session_no_response(store: SessionStore, clock: FakeClock) -> None:
    assert await store.save_response(record("resp_1", "nobody", clock)) is False
    assert await store.get_response("resp_1") is None


async def test_responses_go_with_their_session(
    store: SessionStore, clock: FakeClock, target: Target
) -> None:
    await store.record_turn(make_turn("k", 1))
    await store.record_turn(make_turn("other", 1))
    await store.save_response(record("resp_1", "k", clock))
    await store.save_response(record("resp_2", "other", clock))
    assert await store.delete("k")
    assert await store.get_response("resp_1") is None
    assert await target.rows("SELECT id FROM responses") == [("resp_2",)]


async def test_expired_responses_are_not_found_and_deleted_on_the_next_save(
    store: SessionStore, clock: FakeClock, target: Target
) -> None:
    await store.record_turn(make_turn("k", 1))
    await store.save_response(record("resp_old", "k", clock, days=1))
    await store.save_response(record("resp_new", "k", clock, days=30))
    clock.now += DAY  # expires_at is the first moment it is gone
    assert await store.get_response("resp_old") is None
    assert await store.get_response("resp_new") is not None
    assert len(await target.rows("SELECT id FROM responses")) == 2
    await store.save_response(record("resp_3", "k", clock))
    assert sorted(await target.rows("SELECT id FROM responses")) == [("resp_3",), ("resp_new",)]


async def test_a_body_may_be_left_out(store: SessionStore, clock: FakeClock) -> None:
    await store.record_turn(make_turn("k", 1))
    await store.save_response(ResponseRecord("resp_big", "k", clock.now, clock.now + DAY, None))
    found = await store.get_response("resp_big")
    assert found is not None and found.body is None


async def test_responses_survive_reopening(target: Target, clock: FakeClock) -> None:
    first = await target.open(clock)
    await first.record_turn(make_turn("k", 1))
    await first.save_response(record("resp_1", "k", clock))
    await first.close()
    second = await target.open(clock)
    try:
        assert (await second.get_response("resp_1")) is not None
    finally:
        await second.close()


async def test_a_v2_file_is_migrated_to_v3_keeping_its_data(
    db_path: Path, clock: FakeClock
) -> None:
    db_path.parent.mkdir(parents=True)
    with closing(sqlite3.connect(db_path, isolation_level=None)) as conn:
        for script in (sessions.SCHEMA_V1, sessions.MIGRATE_V1_TO_V2):
            conn.executescript(script)
        conn.execute("PRAGMA user_version = 2")
        conn.execute(
            "INSERT INTO sessions (key, agent_id, session_id, created_at, updated_at, turns)"
            " VALUES ('k', 'main', 's1', 1, 1, 1)"
        )
        for role, text in (("user", "q0"), ("assistant", "a0")):
            conn.execute(
                "INSERT INTO messages (session_key, session_id, role, content, run_id, ts,"
                " status) VALUES ('k', 's1', ?, ?, 'r0', 1, 'ok')",
                (role, text),
            )
    store = await SqliteStore.open(db_path, now_ms=clock)
    try:
        await store.record_turn(make_turn("k", 1))
        assert await store.save_response(record("resp_1", "k", clock))
        history = await store.prompt_history("k")
        assert [m.text for m in history] == ["q0", "a0", "q1", "a1"]
        assert (await store.get_response("resp_1")).is_latest  # type: ignore[union-attr]
    finally:
        await store.close()
    assert query(db_path, "PRAGMA user_version") == [(3,)]


def test_response_reads_and_deletes_use_the_indexes() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    sessions.migrate(conn)
    statements = [
        (sessions.GET_RESPONSE, ("resp_1", 0)),
        (sessions.PURGE_RESPONSES, (0,)),
        (sessions.SAVE_RESPONSE, ("resp_1", 0, 1, None, "k")),
        ("DELETE FROM responses WHERE session_key = ?", ("k",)),  # what the cascade runs
    ]
    for sql, params in statements:
        steps = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
        assert steps and not any(step.startswith("SCAN") for step in steps), (sql, steps)
    conn.close()
