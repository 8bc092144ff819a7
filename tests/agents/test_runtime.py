"""The one run codepath end to end: real SQLite store, real providers, fake upstream servers."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from moltbot.agents.events import AgentEvent
from moltbot.agents.runtime import AgentRuntime, InvalidTurn, Run, TurnRequest
from moltbot.agents.store.sqlite import SqliteStore
from moltbot.config.model import AgentConfig, Config, Identity, ProviderConfig
from moltbot.providers.registry import ProviderRegistry
from tests.conftest import FAST_RETRIES, make_config
from tests.fake_upstreams import FakeAnthropic, FakeOpenAI, echo_last_user, provider_config

MakeRuntime = Callable[[Config], Awaitable[AgentRuntime]]


@pytest.fixture
async def make_runtime() -> AsyncIterator[MakeRuntime]:
    runtimes: list[AgentRuntime] = []

    async def make(config: Config) -> AgentRuntime:
        store = await SqliteStore.open(config.session_store_path)
        providers = ProviderRegistry.from_config(config.models, read_timeout=5)
        runtime = AgentRuntime(
            config=config, store=store, providers=providers, retry_policy=FAST_RETRIES
        )
        runtimes.append(runtime)
        return runtime

    yield make
    for runtime in runtimes:
        await runtime.close()


def upstream_config(state_dir: Path, *ups: ProviderConfig, **kw: object) -> Config:
    primary = f"{ups[0].name}/{ups[0].models[0].id}"
    return make_config(state_dir, providers=ups, primary=primary, **kw)  # type: ignore[arg-type]


async def collect(run: Run, timeout: float = 10) -> list[AgentEvent]:
    async with asyncio.timeout(timeout):
        return [event async for event in run]


def reply_of(events: list[AgentEvent]) -> str:
    return "".join(e.data["delta"] for e in events if e.stream == "assistant")


def turn(message: str, key: str = "agent:main:s1", **kw: object) -> TurnRequest:
    return TurnRequest.text(message, key, **kw)


async def test_events_are_ordered_with_lifecycle_usage_and_seq(
    make_runtime: MakeRuntime, state_dir: Path
) -> None:
    async with FakeOpenAI(reply="one two three") as up:
        runtime = await make_runtime(upstream_config(state_dir, provider_config(up)))
        events = await collect(runtime.start(turn("hi")))
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[0].phase == "start" and events[-1].phase == "end"
    assert [e.stream for e in events[1:-1]] == ["assistant"] * 3 + ["usage"]
    assert reply_of(events) == "one two three"
    assert events[-2].data["output"] == 3  # the usage the upstream reported
    assert events[-1].data["finishReason"] == "stop" and events[-1].data["model"] == "up/m1"
    # Each assistant event carries its new text only, never the text so far.
    assert [e.data for e in events if e.stream == "assistant"][-1] == {"delta": " three"}


async def test_history_is_carried_within_a_session_and_isolated_between_sessions(
    make_runtime: MakeRuntime, state_dir: Path
) -> None:
    async with FakeOpenAI(reply=echo_last_user) as up:
        runtime = await make_runtime(upstream_config(state_dir, provider_config(up)))
        await collect(runtime.start(turn("first", "agent:main:a")))
        await collect(runtime.start(turn("other", "agent:main:b")))
        await collect(runtime.start(turn("second", "agent:main:a")))
    third = [(m["role"], m["content"]) for m in up.requests[2].messages if m["role"] != "system"]
    assert third == [("user", "first"), ("assistant", "first"), ("user", "second")]
    other = [m["content"] for m in up.requests[1].messages if m["role"] != "system"]
    assert other == ["other"]


async def test_turns_of_one_session_run_one_at_a_time_in_submit_order(
    make_runtime: MakeRuntime, state_dir: Path
) -> None:
    async with FakeOpenAI(reply=echo_last_user) as up:
        for _ in range(4):
            up.stream(["slow ", "reply"], delay=0.05)
        runtime = await make_runtime(upstream_config(state_dir, provider_config(up)))
        runs = [runtime.start(turn(f"m{i}")) for i in range(4)]
        await asyncio.gather(*(collect(r) for r in runs))
    assert up.max_active_streams == 1
    assert [r.last_user_text() for r in up.requests] == ["m0", "m1", "m2", "m3"]
    # Each turn saw the previous ones as history.
    assert len(up.requests[3].messages) == 1 + 3 * 2 + 1  # system + 3 turns + the new message


async def test_max_concurrent_queues_runs_beyond_the_limit(
    make_runtime: MakeRuntime, state_dir: Path
) -> None:
    async with FakeOpenAI() as up:
        for _ in range(6):
            up.stream(["a ", "b"], delay=0.05)
        config = upstream_config(state_dir, provider_config(up), max_concurrent=2)
        runtime = await make_runtime(config)
        runs = [runtime.start(turn("x", f"agent:main:s{i}")) for i in range(6)]
        results = await asyncio.gather(*(collect(r) for r in runs))
    assert up.max_active_streams == 2
    assert all(reply_of(events) == "a b" for events in results)


async def test_timeout_ends_the_run_with_an_error_and_closes_the_upstream(
    make_runtime: MakeRuntime, state_dir: Path
) -> None:
    async with FakeOpenAI() as up:
        up.hang()
        runtime = await make_runtime(upstream_config(state_dir, provider_config(up)))
        events = await collect(runtime.start(turn("hi", timeout_seconds=0.3)))
        await up.wait_disconnect(timeout=2)
    assert events[-1].phase == "error" and events[-1].data["kind"] == "timeout"
    [message] = [m for m in await runtime.store.messages("agent:main:s1") if m.role == "assistant"]
    assert message.status == "error"


async def test_abort_stops_the_run_records_it_and_the_next_turn_works(
    make_runtime: MakeRuntime, state_dir: Path
) -> None:
    async with FakeOpenAI(reply=echo_last_user) as up:
        up.hang(after_chunks=1)
        runtime = await make_runtime(upstream_config(state_dir, provider_config(up)))
        run = runtime.start(turn("stop me"))
        events: list[AgentEvent] = []
        async for event in run:
            events.append(event)
            if event.stream == "assistant":
                assert runtime.abort(run.id)
        await up.wait_disconnect(timeout=2)
        assert events[-1].phase == "end" and events[-1].data["aborted"] is True
        assert run.status == "aborted"
        follow_up = await collect(runtime.start(turn("again")))
    assert reply_of(follow_up) == "again"
    stored = await runtime.store.messages("agent:main:s1")
    assert [(m.role, m.status) for m in stored] == [
        ("user", "aborted"),
        ("assistant", "aborted"),
        ("user", "ok"),
        ("assistant", "ok"),
    ]
    assert stored[1].content == "stop"  # the partial reply is kept, marked
    # The aborted turn is not sent to the model as history.
    assert [m["content"] for m in up.requests[1].messages if m["role"] != "system"] == ["again"]


async def test_consumer_going_away_aborts_the_run_and_closes_the_upstream(
    make_runtime: MakeRuntime, state_dir: Path
) -> None:
    async with FakeOpenAI() as up:
        up.hang(after_chunks=1)
        runtime = await make_runtime(upstream_config(state_dir, provider_config(up)))
        run = runtime.start(turn("hi"))
        events = run.events()
        async for event in events:
            if event and event.stream == "assistant":
                break
        await events.aclose()  # what a disconnected HTTP client's handler does
        await up.wait_disconnect(timeout=1)
        async with asyncio.timeout(5):
            await run.wait()
    assert run.status == "aborted"
    assert runtime.get_run(run.id) is run  # still visible to agent.wait after it ended


async def test_rate_limited_then_success_is_retried_before_the_first_token(
    make_runtime: MakeRuntime, state_dir: Path
) -> None:
    async with FakeOpenAI(reply="fine") as up:
        up.status(429, headers={"Retry-After": "0"})
        runtime = await make_runtime(upstream_config(state_dir, provider_config(up)))
        events = await collect(runtime.start(turn("hi")))
    assert len(up.requests) == 2
    assert reply_of(events) == "fine" and events[-1].phase == "end"


async def test_fallback_model_answers_when_the_first_fails(
    make_runtime: MakeRuntime, state_dir: Path
) -> None:
    async with FakeOpenAI() as first, FakeOpenAI(reply="from second") as second:
        first.status(401)
        config = make_config(
            state_dir,
            providers=(provider_config(first, "one"), provider_config(second, "two")),
            primary="one/m1",
            fallbacks=("two/m1",),
        )
        runtime = await make_runtime(config)
        events = await collect(runtime.start(turn("hi")))
    assert reply_of(events) == "from second"
    assert events[-1].data["model"] == "two/m1"
    assert (await runtime.store.get("agent:main:s1")).model == "two/m1"  # type: ignore[union-attr]


@pytest.mark.parametrize("fault", ["reset", "malformed"])
async def test_broken_streams_end_with_a_clean_error(
    make_runtime: MakeRuntime, state_dir: Path, fault: str
) -> None:
    async with FakeOpenAI(reply="a b c d") as up:
        up.reset_after(2) if fault == "reset" else up.malformed(after_chunks=2)
        runtime = await make_runtime(upstream_config(state_dir, provider_config(up)))
        events = await collect(runtime.start(turn("hi")))
        healthy = await collect(runtime.start(turn("hi again", "agent:main:s2")))
    assert events[-1].phase == "error"
    assert events[-1].data["kind"] == ("connection" if fault == "reset" else "malformed")
    assert "Traceback" not in events[-1].data["error"]
    assert len(up.requests) == 2  # no retry once tokens had been streamed
    assert healthy[-1].phase == "end"


async def test_history_survives_a_restart_of_the_store(
    make_runtime: MakeRuntime, state_dir: Path
) -> None:
    async with FakeOpenAI(reply=echo_last_user) as up:
        config = upstream_config(state_dir, provider_config(up))
        first = await make_runtime(config)
        await collect(first.start(turn("remember me")))
        await first.close()
        second = await make_runtime(config)
        await collect(second.start(turn("and now")))
    contents = [m["content"] for m in up.requests[1].messages if m["role"] != "system"]
    assert contents == ["remember me", "remember me", "and now"]


async def test_anthropic_provider_through_the_runtime(
    make_runtime: MakeRuntime, state_dir: Path
) -> None:
    async with FakeAnthropic(reply="bonjour le monde") as up:
        runtime = await make_runtime(upstream_config(state_dir, provider_config(up, "claude")))
        events = await collect(runtime.start(turn("hi", extra_system_prompt="Be brief.")))
    assert reply_of(events) == "bonjour le monde"
    body = up.requests[0].json
    assert "Be brief." in body["system"]
    assert body["messages"] == [{"role": "user", "content": "hi"}]


async def test_echo_provider_is_the_offline_default(
    make_runtime: MakeRuntime, state_dir: Path
) -> None:
    runtime = await make_runtime(make_config(state_dir))
    assert runtime.providers.uses_offline_default
    events = await collect(runtime.start(turn("say   it back")))
    assert reply_of(events) == "say   it back"
    assert events[-1].data["model"] == "builtin/echo"
    assert next(e for e in events if e.stream == "usage").data["output"] == 3


async def test_system_prompt_has_identity_workspace_files_and_extra_prompt(
    make_runtime: MakeRuntime, state_dir: Path, tmp_path: Path
) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "AGENTS.md").write_text("Always answer in haiku.\n")
    (workspace / "SOUL.md").write_text("x" * 50)
    agent = AgentConfig(
        id="poet", default=True, workspace=workspace, identity=Identity(name="Molty", emoji="🦞")
    )
    async with FakeOpenAI() as up:
        config = upstream_config(
            state_dir,
            provider_config(up),
            agents=(agent,),
            bootstrap_max_chars=30,
            user_timezone="Europe/Berlin",
        )
        runtime = await make_runtime(config)
        await collect(runtime.start(turn("hi", "agent:poet:x", extra_system_prompt="Be kind.")))
    system = up.requests[0].messages[0]["content"]
    assert "Your name is Molty 🦞." in system
    assert f"Your working directory is: {workspace}" in system
    assert "## AGENTS.md\nAlways answer in haiku." in system
    assert "[...truncated, read SOUL.md for full content...]" in system
    assert "Time zone: Europe/Berlin" in system
    assert "## Request Context\nBe kind." in system
    assert "agent=poet" in system and "model=up/m1" in system


async def test_invalid_turns_are_rejected_before_they_start(
    make_runtime: MakeRuntime, state_dir: Path
) -> None:
    config = make_config(state_dir, agents=(AgentConfig(id="alpha"), AgentConfig(id="beta")))
    runtime = await make_runtime(config)
    with pytest.raises(InvalidTurn, match="unknown agent id"):
        runtime.start(turn("hi", "agent:nobody:x"))
    with pytest.raises(InvalidTurn, match="does not match"):
        runtime.start(turn("hi", "agent:alpha:x", agent_id="beta"))
    with pytest.raises(InvalidTurn, match="empty"):
        runtime.start(turn("   ", "agent:alpha:x"))
    run = runtime.start(turn("hi", "agent:beta:x", run_id="r1"))
    with pytest.raises(InvalidTurn, match="already in use"):
        runtime.start(turn("hi", "agent:beta:y", run_id="r1"))
    await collect(run)
    assert runtime.active_runs() == []


async def test_more_than_a_hundred_runs_reach_the_upstream_at_once(
    make_runtime: MakeRuntime, state_dir: Path
) -> None:
    runs_at_once = 150  # above aiohttp's default connection cap of 100
    async with FakeOpenAI() as up:
        for _ in range(runs_at_once):
            up.hang(after_chunks=1)
        config = upstream_config(state_dir, provider_config(up), max_concurrent=200)
        runtime = await make_runtime(config)
        runs = [runtime.start(turn("x", f"agent:main:s{i}")) for i in range(runs_at_once)]
        await up.wait_until(lambda: up.active_streams == runs_at_once, timeout=20)
        for run in runs:
            run.abort()
        await asyncio.gather(*(collect(r) for r in runs))
    assert up.max_active_streams == runs_at_once


async def test_waiting_for_a_free_slot_counts_against_the_timeout(
    make_runtime: MakeRuntime, state_dir: Path
) -> None:
    async with FakeOpenAI() as up:
        up.hang()
        config = upstream_config(state_dir, provider_config(up), max_concurrent=1)
        runtime = await make_runtime(config)
        blocker = runtime.start(turn("hang", "agent:main:a", timeout_seconds=30))
        await up.wait_until(lambda: up.active_streams == 1)
        queued = await collect(runtime.start(turn("x", "agent:main:b", timeout_seconds=0.2)))
        blocker.abort()
        await collect(blocker)
    assert queued[-1].phase == "error" and queued[-1].data["kind"] == "timeout"
    assert "free run slot" in queued[-1].data["error"]
    assert [e.phase for e in queued] == ["error"]  # it never started
    assert await runtime.store.get("agent:main:b") is None


async def test_a_second_abort_while_the_turn_is_being_saved_is_refused(
    state_dir: Path,
) -> None:
    saving = asyncio.Event()
    loop = asyncio.get_running_loop()

    def slow_inserts(statement: str) -> None:  # the store's trace hook, on its own thread
        if statement.lstrip().upper().startswith("INSERT INTO MESSAGES"):
            loop.call_soon_threadsafe(saving.set)
            threading.Event().wait(0.05)

    async with FakeOpenAI() as up:
        up.hang(after_chunks=1)
        config = upstream_config(state_dir, provider_config(up))
        store = await SqliteStore.open(config.session_store_path, trace=slow_inserts)
        providers = ProviderRegistry.from_config(config.models)
        runtime = AgentRuntime(config=config, store=store, providers=providers)
        try:
            run = runtime.start(turn("hi"))
            async for event in run:
                if event.stream == "assistant":
                    assert run.abort("first")
                    await asyncio.wait_for(saving.wait(), 5)
                    assert not run.abort("second")
            messages = await store.messages("agent:main:s1")
        finally:
            await runtime.close()
    assert [(m.role, m.status) for m in messages] == [("user", "aborted"), ("assistant", "aborted")]


async def test_runs_not_kept_after_end_are_forgotten(
    make_runtime: MakeRuntime, state_dir: Path
) -> None:
    runtime = await make_runtime(make_config(state_dir))
    kept = runtime.start(turn("a", "agent:main:x"))
    dropped = runtime.start(turn("b", "agent:main:y", keep_after_end=False))
    await collect(kept)
    await collect(dropped)
    assert runtime.get_run(kept.id) is kept
    assert runtime.get_run(dropped.id) is None


async def test_lone_surrogates_from_the_model_are_replaced_and_the_turn_is_saved(
    make_runtime: MakeRuntime, state_dir: Path
) -> None:
    async with FakeOpenAI() as up:
        up.stream(["ok ", "\ud800bad"])  # arrives as a "\\ud800" JSON escape
        runtime = await make_runtime(upstream_config(state_dir, provider_config(up)))
        events = await collect(runtime.start(turn("hi")))
    assert reply_of(events) == "ok \ufffdbad"
    assert events[-1].phase == "end"
    stored = await runtime.store.messages("agent:main:s1")
    assert [(m.role, m.status, m.content) for m in stored][-1] == (
        "assistant",
        "ok",
        "ok \ufffdbad",
    )
