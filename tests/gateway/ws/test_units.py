"""The pure pieces: frame parsing, param validation, dedupe bounds, chat throttling, routes."""

from __future__ import annotations

import asyncio

import pytest

from moltbot.agents.events import (
    AgentEvent,
    EventItem,
    RunEnded,
    RunStarted,
    TextChunk,
    UsageReport,
)
from moltbot.content import assistant_text
from moltbot.gateway.ws.admission import PendingHandshakes, Slot
from moltbot.gateway.ws.chat_events import ChatProjector
from moltbot.gateway.ws.connection import Connection
from moltbot.gateway.ws.dedupe import DedupeCache
from moltbot.gateway.ws.health import HealthMonitor
from moltbot.gateway.ws.params import Params
from moltbot.gateway.ws.protocol import (
    FrameError,
    RpcError,
    close_reason,
    invalid_request,
    parse_request,
)
from moltbot.gateway.ws.routes import Routes
from moltbot.providers.base import Usage


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_parse_request_is_strict():
    frame = parse_request({"type": "req", "id": "1", "method": "health"})
    assert (frame.id, frame.method, frame.params) == ("1", "health", {})
    with pytest.raises(FrameError) as raised:
        parse_request({"type": "req", "id": "2", "method": "", "x": 1})
    assert raised.value.frame_id == "2"
    assert raised.value.message == (
        "invalid request frame: at root: unexpected property 'x'; "
        "at /method: must NOT have fewer than 1 characters"
    )
    with pytest.raises(FrameError) as raised:
        parse_request({"type": "res", "id": ""})
    assert raised.value.frame_id is None


def test_error_shape_has_only_what_is_set():
    assert invalid_request("nope").shape() == {"code": "INVALID_REQUEST", "message": "nope"}
    error = invalid_request("x", details={"a": 1}, retryable=True, retry_after_ms=5)
    assert error.shape() == {
        "code": "INVALID_REQUEST",
        "message": "x",
        "details": {"a": 1},
        "retryable": True,
        "retryAfterMs": 5,
    }


def test_params_collect_every_problem_once():
    p = Params({"n": 1.5, "s": 3, "b": "x", "obj": {"deep": 1}, "list": ["a", 2], "extra": 0})
    assert p.integer("n") is None
    assert p.string("s") is None
    assert p.boolean("b") is None
    assert p.string("missing", required=True) is None
    child = p.object("obj")
    assert child is not None and child.integer("deep", maximum=0) is None
    assert p.strings("list") is None
    with pytest.raises(RpcError) as raised:
        p.finish("demo")
    assert raised.value.message == (
        "invalid demo params: at /n: must be integer; at /s: must be string; "
        "at /b: must be boolean; at root: must have required property 'missing'; "
        "at /obj/deep: must be <= 0; at /list/1: must be string; "
        "at root: unexpected property 'extra'"
    )


def test_params_accept_integral_floats_and_ignored_fields():
    p = Params({"n": 3.0, "to": "+1555", "flag": True})
    assert p.integer("n", minimum=1) == 3
    assert p.boolean("flag") is True
    p.ignored("to")
    p.finish("demo")


def test_close_reason_fits_a_close_frame():
    assert close_reason("short") == "short"
    long = "é" * 100  # 200 bytes
    cut = close_reason(long)
    assert len(cut.encode()) <= 120 and long.startswith(cut)


def test_dedupe_expires_and_is_bounded():
    clock = Clock()
    cache = DedupeCache(ttl=300, max_entries=3, clock=clock)
    for key in "abcd":
        cache.put(key, True, {"k": key})
    assert len(cache) == 3 and cache.get("a") is None and cache.get("d").payload == {"k": "d"}
    clock.now += 301
    assert cache.get("d") is None and len(cache) == 0


def event(seq: int, item: EventItem, run_id: str = "r") -> AgentEvent:
    return AgentEvent(run_id, seq, 1, "agent:main:main", item)


def ended(status: str, error: str | None = None) -> RunEnded:
    return RunEnded(status, 0, 1, "stop", None, error)  # type: ignore[arg-type]


def test_chat_deltas_are_throttled_and_the_final_has_everything():
    clock = Clock()
    chat = ChatProjector(clock=clock, interval=0.15)
    assert chat.project(event(1, RunStarted(0))) is None
    first = chat.project(event(2, TextChunk("a")))
    assert first is not None and first.droppable
    assert first.payload["message"]["content"] == [{"type": "text", "text": "a"}]
    clock.now += 0.1
    assert chat.project(event(3, TextChunk("b"))) is None
    clock.now += 0.06
    later = chat.project(event(4, TextChunk("c")))
    assert later is not None and later.payload["seq"] == 4
    assert later.payload["message"]["content"] == [{"type": "text", "text": "abc"}]
    chat.project(event(5, UsageReport(Usage(1, 2))))
    final = chat.project(event(6, ended("ok")))
    assert final is not None and not final.droppable
    assert final.payload == {
        "runId": "r",
        "sessionKey": "agent:main:main",
        "seq": 6,
        "state": "final",
        "stopReason": "stop",
        "message": {
            "role": "assistant",
            "content": [{"type": "text", "text": "abc"}],
            "timestamp": 1,
        },
        "usage": {"input": 1, "output": 2, "cacheRead": 0, "cacheWrite": 0, "total": 3},
    }


def test_a_run_first_seen_midway_starts_from_its_reply_so_far():
    replies = {"r": assistant_text("hello wor")}
    chat = ChatProjector(interval=0, reply_of=replies.get)
    update = chat.project(event(7, TextChunk("ld")))
    assert update is not None
    # The lookup already holds the chunk that made the view start.
    assert update.payload["message"]["content"] == [{"type": "text", "text": "hello wor"}]
    replies["r"] = assistant_text("hello world")
    final = chat.project(event(8, ended("ok")))
    assert final is not None
    assert final.payload["message"]["content"] == [{"type": "text", "text": "hello world"}]


def test_chat_errors_and_aborts():
    chat = ChatProjector()
    error = chat.project(event(1, ended("error", "boom"), "e"))
    assert error is not None
    assert (error.payload["state"], error.payload["errorMessage"]) == ("error", "boom")
    aborted = chat.project(event(1, ended("aborted", "rpc"), "a"))
    assert aborted is not None
    assert (aborted.payload["state"], aborted.payload["stopReason"]) == ("aborted", "rpc")


def test_routes_are_bounded_per_connection():
    routes = Routes(max_per_connection=2)
    conn, other = object(), object()
    routes.add(conn, "run", "r1")  # type: ignore[arg-type]
    routes.add(conn, "session", "s")  # type: ignore[arg-type]
    routes.add(other, "session", "s")  # type: ignore[arg-type]
    routes.add(conn, "chat", "s")  # type: ignore[arg-type]  # drops the oldest: run r1
    assert routes.targets("run", "r1") == set()
    assert routes.targets("session", "s") == {conn, other}
    routes.forget("session", "s")
    assert routes.targets("session", "s") == set()
    routes.drop_connection(conn)  # type: ignore[arg-type]
    assert routes.targets("chat", "s") == set()


async def test_health_refreshes_coalesce_and_cache():
    calls = 0
    release = asyncio.Event()

    async def build() -> dict:
        nonlocal calls
        calls += 1
        await release.wait()
        return {"ok": True, "n": calls}

    clock = Clock()
    health = HealthMonitor(build, clock=clock, max_age=60)
    waiting = [asyncio.ensure_future(health.get()) for _ in range(3)]
    await asyncio.sleep(0)
    release.set()
    assert [await w for w in waiting] == [{"ok": True, "n": 1}] * 3
    assert await health.get() == {"ok": True, "n": 1}  # cached
    clock.now += 61
    assert await health.get() == {"ok": True, "n": 2}
    assert calls == 2


def test_params_bound_integers_and_refuse_lone_surrogates():
    p = Params(
        {
            "huge": 10**400,
            "tiny": -(10**400),
            "inf": float("inf"),
            "big_float": 1e300,
            "edge": 2**53 - 1,
            "s": "a\ud800",
            "pair": "😀",  # a valid pair decodes to one character: fine
            "list": ["ok", "\udfff"],
            "map": {"\ud800": True},
            "\udc00": 1,
        }
    )
    assert p.integer("huge") is None and p.integer("tiny", minimum=0) is None
    assert p.integer("inf") is None and p.integer("big_float") is None
    assert p.integer("edge") == 2**53 - 1
    assert p.string("s") is None and p.string("pair") == "😀"
    assert p.strings("list") is None and p.bool_map("map") is None
    problems = p.problems
    assert problems == [
        "at /huge: must be <= 9007199254740991",
        "at /tiny: must be >= 0",
        "at /inf: must be integer",
        "at /big_float: must be <= 9007199254740991",
        "at /s: must be valid Unicode (no lone surrogates)",
        "at /list/1: must be valid Unicode (no lone surrogates)",
        "at /map/\\ud800: must be valid Unicode (no lone surrogates)",
        "at root: unexpected property '\\udc00'",
    ]
    assert all(problem.encode() for problem in problems)  # safe to send and log


def test_pending_handshakes_at_a_cap_evict_the_oldest():
    pending = PendingHandshakes(max_total=3, max_per_ip=2)
    evicted: list[str] = []

    def take(ip: str, name: str) -> Slot:
        return pending.take(ip, lambda: evicted.append(name))

    a1, a2 = take("a", "a1"), take("a", "a2")
    a3 = take("a", "a3")  # per address: a1 makes room
    assert evicted == ["a1"] and len(pending) == 2
    a1.release()  # the evicted socket's own release later does nothing
    assert len(pending) == 2
    b1 = take("b", "b1")
    assert len(pending) == 3
    c1 = take("c", "c1")  # in all: the oldest anywhere (a2) makes room
    assert evicted == ["a1", "a2"] and len(pending) == 3
    a2.evict()  # once only
    assert evicted == ["a1", "a2"]
    for slot in (a3, b1, c1):
        slot.release()
        slot.release()
    assert len(pending) == 0 and evicted == ["a1", "a2"]


class FakeSocket:
    """Records frames; `gate` holds send_frame (a client that does not read)."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.closed = False

    async def send_frame(self, data: bytes, _type: object) -> None:
        await self.gate.wait()
        self.sent.append(data)


async def test_an_idle_connection_keeps_no_queue_or_writer_task():
    ws = FakeSocket()
    conn = Connection(
        ws,  # type: ignore[arg-type]
        transport=None,
        conn_id="c",
        remote="",
        max_buffered=1 << 20,
        close_timeout=1.0,
    )
    assert not hasattr(conn, "__dict__")
    assert (conn._queue, conn._writer) == (None, None)
    ws.gate.clear()
    for i in range(3):
        assert conn.send_event("tick", {"i": i})
    writer = conn._writer
    assert writer is not None and conn.buffered > 0
    await asyncio.sleep(0)
    assert conn.send_event("tick", {"i": 3})  # queued behind a blocked send: same task
    assert conn._writer is writer
    ws.gate.set()
    await writer
    assert (conn._queue, conn._writer, conn.buffered) == (None, None, 0)
    assert [b'"i":%d' % i in frame for i, frame in enumerate(ws.sent)] == [True] * 4
    assert conn.send_event("tick", {"i": 4})  # a new drain task once idle again
    await conn._writer  # type: ignore[misc]
    assert conn.seq == 5 and conn._writer is None and len(ws.sent) == 5


def test_a_reply_longer_than_a_frame_is_cut_and_marked():
    from moltbot.gateway.ws.budget import encoded_size
    from moltbot.gateway.ws.chat_events import assistant_message
    from moltbot.gateway.ws.runs import _payload

    text = "é" * 400_000  # 800 KB of UTF-8
    message = assistant_message(text, 1, room=100_000)
    assert message["truncated"] is True and encoded_size(message) <= 100_000
    assert text.startswith(message["content"][0]["text"])
    payload = _payload(text, 100_000)
    assert payload["truncated"] is True and encoded_size(payload) <= 100_000
    assert "truncated" not in _payload("short", 100_000)
    assert "truncated" not in assistant_message("short", 1, room=100_000)
