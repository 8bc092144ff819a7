"""The session store contract: every behaviour the runtime and the WebSocket methods rely on,
run against both backends (a real SQLite file in tmp_path, a real PostgreSQL database; the
`target`, `store` and `clock` fixtures are in conftest.py)."""

from __future__ import annotations

import asyncio
import signal
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from moltbot.agents.store.protocol import SessionStore
from moltbot.agents.store.records import (
    SessionInfo,
    SessionStoreError,
    Status,
    TranscriptMessage,
    TurnRecord,
)
from moltbot.content import ImagePart, Message, TextPart, ToolCall, assistant_text, user_text
from moltbot.providers.base import Usage
from tests.agents.conftest import FakeClock, Target

REPO_ROOT = Path(__file__).resolve().parents[2]
MINUTE = 60_000


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
    messages: tuple[Message, ...] | None = None,
) -> TurnRecord:
    """Turn `n` of `key`: user says "q<n>", the assistant answers "a<n>"."""
    return TurnRecord(
        key=key,
        agent_id=agent_id,
        run_id=f"run-{key}-{n}",
        messages=messages or (user_text(f"q{n}"), assistant_text(f"a{n}")),
        status=status,
        started_at=n * 1000,
        ended_at=n * 1000 + 500 if ended_at is None else ended_at,
        model=model,
        usage=usage,
        error=error,
    )


def pair(n: int) -> list[Message]:
    return [user_text(f"q{n}"), assistant_text(f"a{n}")]


def pairs(first: int, last: int) -> list[Message]:
    return [m for n in range(first, last + 1) for m in pair(n)]


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
    assert await store.preview(["nope"]) == {}


async def test_prompt_history_has_ok_turns_only_oldest_first_and_never_half_a_turn(
    store: SessionStore,
) -> None:
    key = "agent:main:h"
    statuses: list[Status] = ["ok", "error", "ok", "aborted", "ok"]
    for n, status in enumerate(statuses, start=1):
        await store.record_turn(make_turn(key, n, status=status))

    assert await store.prompt_history(key) == pair(1) + pair(3) + pair(5)
    assert await store.prompt_history(key, max_messages=4) == pair(3) + pair(5)
    assert await store.prompt_history(key, max_messages=3) == pair(5)  # starts at a user message
    assert await store.prompt_history(key, max_messages=1) == []
    assert await store.prompt_history(key, max_messages=0) == []


async def test_the_window_is_the_last_100_messages(store: SessionStore) -> None:
    key = "agent:main:long"
    for n in range(1, 61):
        await store.record_turn(make_turn(key, n))
    assert await store.prompt_history(key) == pairs(11, 60)  # 100 messages, the newest
    assert len(await store.messages(key, limit=1000)) == 120  # all kept


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


async def test_image_bytes_are_kept_neither_in_the_store_nor_in_the_history(
    target: Target,
) -> None:
    store = await target.open()
    key = "agent:main:img"
    try:
        async with store.turn_lock(key):
            await store.record_turn(make_turn(key, 1))
        async with store.turn_lock(key):
            assert await store.prompt_history(key) == pair(1)  # remembered from here on
            image = ImagePart("image/png", 4, "iVBORw==")
            look = Message("user", (TextPart("look"), image))
            await store.record_turn(make_turn(key, 2, messages=(look, assistant_text("a pixel"))))
        kept = [
            Message("user", (TextPart("look"), ImagePart("image/png", 4))),
            assistant_text("a pixel"),
        ]
        assert await store.prompt_history(key) == pair(1) + kept
        assert "iVBORw" not in str(await target.rows("SELECT content, parts FROM messages"))
    finally:
        await store.close()
    reopened = await target.open()
    try:
        assert await reopened.prompt_history(key) == pair(1) + kept  # from the store itself
    finally:
        await reopened.close()


async def test_a_failing_write_leaves_nothing_behind(store: SessionStore, target: Target) -> None:
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
    assert await target.rows("SELECT count(*) FROM messages") == [(2,)]
    assert (await store.record_turn(make_turn(key, 3))).turns == 2  # the store still works


async def test_a_failing_call_does_not_undo_concurrent_ones(store: SessionStore) -> None:
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


async def test_many_concurrent_turns_all_land_in_order(target: Target) -> None:
    writer = await target.open()
    keys = [f"agent:main:c{i}" for i in range(20)]
    turns = [make_turn(keys[n % 20], n, usage=Usage(1, 2)) for n in range(200)]
    try:
        for first in range(0, 200, 20):  # each key's turns in order, all keys at once
            await asyncio.gather(*(writer.record_turn(t) for t in turns[first : first + 20]))
    finally:
        await writer.close()

    store = await target.open()
    try:
        for i, key in enumerate(keys):
            info = await store.get(key)
            assert info is not None
            assert (info.turns, info.input_tokens, info.total_tokens) == (10, 10, 30)
            stored = await store.messages(key)
            assert [m.content for m in stored] == [
                text for n in range(i, 200, 20) for text in (f"q{n}", f"a{n}")
            ]
    finally:
        await store.close()


# --- Structured messages -------------------------------------------------------------------------


def tool_round() -> tuple[TurnRecord, TurnRecord]:
    """A turn that ends in a tool call, and the next one that carries its result."""
    call = ToolCall("call_1", "weather", '{"city": "Oslo"}')
    asks = TurnRecord(
        "agent:main:tools",
        "main",
        "run-t1",
        (
            Message(
                "user",
                (TextPart("Weather in Oslo? "), ImagePart("image/png", 68, data="iVBORw0KGgo=")),
            ),
            Message("assistant", (TextPart("Let me look."),), tool_calls=(call,)),
        ),
        "ok",
        1000,
        1500,
        model="up/m1",
    )
    answers = TurnRecord(
        "agent:main:tools",
        "main",
        "run-t2",
        (
            Message("tool", (TextPart('{"temp": -3}'),), tool_call_id="call_1"),
            assistant_text("It is -3 °C in Oslo.\x00"),
        ),
        "ok",
        2000,
        2500,
        model="up/m1",
    )
    return asks, answers


async def test_structured_messages_and_tool_rounds_round_trip(store: SessionStore) -> None:
    asks, answers = tool_round()
    await store.record_turn(asks)
    await store.record_turn(answers)

    image_kept = Message(
        "user", (TextPart("Weather in Oslo? "), ImagePart("image/png", 68)), (), None
    )  # the type and size of an image stay, its bytes do not
    expected = [image_kept, asks.messages[1], *answers.messages]
    assert await store.prompt_history("agent:main:tools") == expected
    stored = await store.messages("agent:main:tools")
    assert [m.message for m in stored] == expected
    assert [m.role for m in stored] == ["user", "assistant", "tool", "assistant"]
    assert stored[0].content == "Weather in Oslo? "  # the text, for previews and titles
    assert stored[2].message.tool_call_id == "call_1"
    assert stored[1].message.tool_calls == (ToolCall("call_1", "weather", '{"city": "Oslo"}'),)
    previews = await store.preview(["agent:main:tools"], limit=1)
    assert previews["agent:main:tools"][0].content.startswith("It is -3 °C")


async def test_a_window_never_opens_on_a_tool_result(store: SessionStore) -> None:
    asks, answers = tool_round()
    await store.record_turn(asks)
    await store.record_turn(answers)
    await store.record_turn(make_turn("agent:main:tools", 3))
    # The last 4 messages would start at the tool result: the window starts at q3 instead.
    assert await store.prompt_history("agent:main:tools", max_messages=4) == pair(3)
    assert len(await store.prompt_history("agent:main:tools", max_messages=6)) == 6


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
    await store.record_turn(make_turn("agent:main:ÄLICE", 5, ended_at=9 * MINUTE))

    async def keys(**filters: object) -> tuple[list[str], int]:
        page, total = await store.list(**filters)  # type: ignore[arg-type]
        return [s.key for s in page], total

    assert await keys(agent_id="ops") == (["agent:ops:bob", "agent:ops:alice_2"], 2)
    assert await keys(search="ALICE") == (["agent:main:Alice", "agent:ops:alice_2"], 2)
    assert await keys(search="äl") == ([], 0)  # ASCII case only, in both backends
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
        ["agent:main:p1", "missing", "agent:main:p2", "agent:main:empty", "agent:main:p1"],
        limit=2,
    )

    assert {k: [m.content for m in v] for k, v in previews.items()} == {
        "agent:main:p1": ["q3", "a3"],
        "agent:main:p2": ["q9", "a9"],
        "agent:main:empty": [],
    }


# --- Reset, delete, ensure ----------------------------------------------------------------------


async def test_reset_hides_the_old_transcript_but_keeps_it(
    store: SessionStore, target: Target, clock: FakeClock
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
    kept = await target.rows("SELECT count(*) FROM messages WHERE session_id = ?", old.session_id)
    assert kept == [(4,)]

    await store.record_turn(make_turn(key, 3))
    assert await store.prompt_history(key) == pair(3)
    assert await store.reset("unknown") is None


async def test_delete_removes_the_session_and_all_its_messages(
    store: SessionStore, target: Target
) -> None:
    await store.record_turn(make_turn("agent:main:d", 1))
    await store.reset("agent:main:d")
    await store.record_turn(make_turn("agent:main:d", 2))
    await store.record_turn(make_turn("agent:main:keep", 3))

    assert await store.delete("agent:main:d") is True

    assert await store.get("agent:main:d") is None
    assert await target.rows("SELECT DISTINCT session_key FROM messages") == [("agent:main:keep",)]
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
        assert read in (pairs(1, n - 1), pairs(1, n))
        assert await store.prompt_history("k") == pairs(1, n)


# --- Opening, closing, crashing -----------------------------------------------------------------


async def test_a_new_store_on_the_same_data_sees_everything(target: Target) -> None:
    first = await target.open()
    info = await first.record_turn(make_turn("agent:main:p", 1, usage=Usage(3, 4)))
    await first.close()

    second = await target.open()
    try:
        assert await second.get("agent:main:p") == info
        assert await second.prompt_history("agent:main:p") == pair(1)
    finally:
        await second.close()


async def test_close_lets_calls_already_made_finish(target: Target) -> None:
    store = await target.open()
    info, _ = await asyncio.gather(store.record_turn(make_turn("agent:main:z", 1)), store.close())

    reopened = await target.open()
    try:
        assert await reopened.get("agent:main:z") == info
    finally:
        await reopened.close()


async def test_a_closed_store_refuses_every_call(target: Target) -> None:
    store = await target.open()
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


CHILD = """
import asyncio, sys
from pathlib import Path
from moltbot.logs import configure_logging
configure_logging("warn")
from moltbot.agents.store.records import TurnRecord
from moltbot.content import assistant_text, user_text

async def main():
    if sys.argv[1] == "sqlite":
        from moltbot.agents.store.sqlite import SqliteStore
        store = await SqliteStore.open(Path(sys.argv[2]))
    else:
        from moltbot.agents.store.postgres import PostgresStore
        from moltbot.config.model import PostgresConfig
        store = await PostgresStore.open(PostgresConfig(sys.argv[2]))
    await store.record_turn(TurnRecord(
        "agent:main:k", "main", "run-1", (user_text("hi"), assistant_text("hello")), "ok", 1, 2
    ))
    print("done", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_a_recorded_turn_survives_kill_9(target: Target) -> None:
    where = str(target.path or target.dsn)
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        target.backend,
        where,
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        assert await asyncio.wait_for(child.stdout.readline(), timeout=30) == b"done\n"
    finally:
        child.send_signal(signal.SIGKILL)
        await child.communicate()  # to the end of its output: the pipe is closed here
    assert child.returncode == -signal.SIGKILL

    store = await target.open()
    try:
        assert await store.prompt_history("agent:main:k") == [
            user_text("hi"),
            assistant_text("hello"),
        ]
    finally:
        await store.close()


# --- One turn of a session at a time --------------------------------------------------------------


async def test_the_turn_lock_runs_a_session_s_turns_one_at_a_time(target: Target) -> None:
    """With SQLite the one process's lanes order the turns: its lock has nothing to do and
    must not block."""
    first, second = await two_processes(target)
    try:
        async with first.turn_lock("agent:main:l"):
            other = asyncio.ensure_future(_locked(second, "agent:main:l"))
            elsewhere = await asyncio.wait_for(_locked(second, "agent:main:other"), 10)
            assert elsewhere == "agent:main:other"  # other sessions never wait
            await asyncio.sleep(0.2)
            assert other.done() is (target.backend == "sqlite")
        assert await asyncio.wait_for(other, 10) == "agent:main:l"
    finally:
        await first.close()
        await second.close()


async def two_processes(target: Target) -> tuple[SessionStore, SessionStore]:
    """Two stores on the same data standing for two processes; SQLite is only ever used by
    one process (its in-memory history would not see the other's writes), so one store."""
    first = await target.open()
    return first, (first if target.backend == "sqlite" else await target.open())


async def _locked(store: SessionStore, key: str) -> str:
    async with store.turn_lock(key):
        return key


async def test_a_turn_reads_and_writes_under_its_lock_and_an_abandoned_wait_releases_it(
    target: Target,
) -> None:
    first, second = await two_processes(target)
    try:
        async with first.turn_lock("k"):
            assert await first.prompt_history("k") == []
            await first.record_turn(make_turn("k", 1))
            waiting = asyncio.ensure_future(_locked(second, "k"))
            await asyncio.sleep(0.1)
            waiting.cancel()  # a run aborted or timed out while it waited for the session
            await asyncio.gather(waiting, return_exceptions=True)
        async with second.turn_lock("k"):  # neither the holder nor the leaver kept it
            assert await second.prompt_history("k") == pair(1)
            await second.record_turn(make_turn("k", 2))
        async with asyncio.timeout(10), first.turn_lock("k"):
            assert await first.prompt_history("k") == pairs(1, 2)
    finally:
        await first.close()
        await second.close()


async def test_a_key_is_found_by_its_current_transcript(store: SessionStore) -> None:
    info = await store.record_turn(make_turn("agent:main:by-id", 1))
    assert await store.key_of(info.session_id) == "agent:main:by-id"
    fresh = await store.reset("agent:main:by-id")
    assert fresh is not None
    assert await store.key_of(info.session_id) is None  # only the current transcript
    assert await store.key_of(fresh.session_id) == "agent:main:by-id"


async def test_a_turn_of_tool_rounds_is_kept_whole_with_its_reply_marked(
    store: SessionStore,
) -> None:
    """The agent's own tools: the run's answers with their calls and the calls' results, in
    one turn; the reply is its last assistant message."""
    call = ToolCall("t1", "read", '{"path": "a.txt"}')
    messages = (
        user_text("what is in a.txt?"),
        Message("assistant", (), tool_calls=(call,)),
        Message("tool", (TextPart("hello"),), tool_call_id="t1"),
        assistant_text("It says hello."),
    )
    turn = make_turn("agent:main:loop", 1, messages=messages, usage=Usage(9, 4))
    await store.record_turn(turn)
    stored = await store.messages("agent:main:loop")
    assert [m.message for m in stored] == list(messages)
    assert [m.ts for m in stored] == [1000, 1000, 1000, 1500]
    assert [(m.model, m.input_tokens) for m in stored] == [(None, None)] * 3 + [("local/echo", 9)]
    assert await store.prompt_history("agent:main:loop") == list(messages)
    # A run that ends on a tool call: the call is the reply, its result comes after it.
    ends_on_call = (user_text("again"), messages[1], messages[2])
    await store.record_turn(make_turn("agent:main:loop", 2, messages=ends_on_call))
    last = (await store.messages("agent:main:loop"))[-3:]
    assert [(m.role, m.ts, m.model) for m in last] == [
        ("user", 2000, None),
        ("assistant", 2500, "local/echo"),
        ("tool", 2500, None),
    ]
