"""A session database written by the previous version (schema v1, text-only messages) opens,
migrates in place and keeps its history. tests/data/sessions-v1.sqlite was made by the code
of commit 0fcf091 (the last with schema v1), not by this version."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from moltbot.agents.store.records import TurnRecord
from moltbot.agents.store.sqlite import SCHEMA_VERSION, SqliteStore
from moltbot.content import Message, TextPart, ToolCall, assistant_text, user_text
from tests.conftest import StartGateway, make_config
from tests.fake_upstreams import FakeOpenAI, provider_config

V1_FILE = Path(__file__).resolve().parents[1] / "data" / "sessions-v1.sqlite"
MAIN = "agent:main:main"


@pytest.fixture
def v1_copy(state_dir: Path) -> Path:
    path = state_dir / "sessions.sqlite"
    shutil.copyfile(V1_FILE, path)
    path.chmod(0o600)
    return path


def schema_version(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("PRAGMA user_version").fetchone()[0]


async def test_a_v1_file_migrates_and_keeps_its_history(v1_copy: Path) -> None:
    assert schema_version(v1_copy) == 1
    store = await SqliteStore.open(v1_copy)
    try:
        assert schema_version(v1_copy) == SCHEMA_VERSION == 3
        # Every message is still there, in order, with its turn's status and metadata.
        messages = await store.messages(MAIN)
        assert [(m.role, m.content, m.status) for m in messages] == [
            ("user", "[Mon 2026-11-30 10:00 UTC] hello", "ok"),
            ("assistant", "Hello! How can I help?", "ok"),
            ("user", "and again", "aborted"),
            ("assistant", "partial", "aborted"),
            ("user", "second question", "ok"),
            ("assistant", "second answer", "ok"),
        ]
        assert (messages[1].model, messages[1].input_tokens, messages[1].output_tokens) == (
            "local/m1",
            12,
            6,
        )
        # The model's context: "ok" turns only, as messages.
        assert await store.prompt_history(MAIN) == [
            user_text("[Mon 2026-11-30 10:00 UTC] hello"),
            assistant_text("Hello! How can I help?"),
            user_text("second question"),
            assistant_text("second answer"),
        ]
        info = await store.get(MAIN)
        assert info is not None and (info.turns, info.input_tokens) == (2, 42)
        sessions, total = await store.list()
        assert total == 2 and {s.key for s in sessions} == {MAIN, "agent:main:openai-user:bob"}

        # The migrated table takes what v1 could not: a tool round.
        call = ToolCall("call_1", "weather", '{"city": "Oslo"}')
        round_trip = (
            user_text("weather in Oslo?"),
            Message("assistant", (), (call,)),
        )
        await store.record_turn(TurnRecord(MAIN, "main", "run-5", round_trip, "ok", 10, 11))
        result = Message("tool", (TextPart("rain"),), tool_call_id="call_1")
        answer = assistant_text("It rains.")
        await store.record_turn(TurnRecord(MAIN, "main", "run-6", (result, answer), "ok", 12, 13))
        history = await store.prompt_history(MAIN)
        assert history[-4:] == [*round_trip, result, answer]
    finally:
        await store.close()
    # Opened again: no second migration, the same rows.
    reopened = await SqliteStore.open(v1_copy)
    try:
        assert len(await reopened.messages(MAIN)) == 10
    finally:
        await reopened.close()


async def test_the_gateway_serves_a_migrated_file(
    start_gateway: StartGateway, state_dir: Path, v1_copy: Path
) -> None:
    """Through the real server: the old history reaches the model on the session's next turn."""
    async with FakeOpenAI(reply="third answer") as up:
        config = make_config(state_dir, providers=(provider_config(up),), primary="up/m1")
        gateway = await start_gateway(config)
        client = gateway.openai()
        completion = await client.chat.completions.create(
            model="moltbot",
            messages=[{"role": "user", "content": "third question"}],
            extra_headers={"x-moltbot-session-key": MAIN},
        )
        assert completion.choices[0].message.content == "third answer"
        sent = [(m["role"], m["content"]) for m in up.requests[0].messages[1:]]
        assert sent == [
            ("user", "[Mon 2026-11-30 10:00 UTC] hello"),
            ("assistant", "Hello! How can I help?"),
            ("user", "second question"),
            ("assistant", "second answer"),
            ("user", "third question"),
        ]
