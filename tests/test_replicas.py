"""Several gateway processes on one PostgreSQL database: `--workers 2` behind one port, and
separate replicas on their own ports sharing conversations. Real processes, a real database,
a fake model upstream in this process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from moltbot.client import GatewayClient, GatewayError
from tests.fake_upstreams import FakeOpenAI, RecordedRequest
from tests.process import GatewayProcess, child_env, free_port, gateway_process, write_config

SECRET = "replica-secret-7c2e"
KEY = "agent:main:shared-thread"
LIMIT = 20.0  # seconds: the bound on anything one step of these tests waits for


def pg_config(upstream: FakeOpenAI, **gateway: Any) -> dict[str, Any]:
    return {
        "gateway": {
            "auth": {"token": SECRET},
            "http": {"endpoints": {"chatCompletions": {"enabled": True}}},
            **gateway,
        },
        "models": {
            "providers": {
                "up": {
                    "baseUrl": upstream.base_url,
                    "api": "openai-completions",
                    "models": [{"id": "m1", "name": "M1"}],
                }
            }
        },
        "session": {
            "store": {"backend": "postgres", "dsn": "${MOLTBOT_PG_DSN}", "pool": {"max": 8}}
        },
    }


@asynccontextmanager
async def replica(
    tmp_path: Path, name: str, upstream: FakeOpenAI, dsn: str, *args: str, **env: str
) -> AsyncIterator[GatewayProcess]:
    state = tmp_path / name
    state.mkdir()
    path = write_config(state / "moltbot.json", pg_config(upstream))
    command = ["gateway", "--config", str(path), "--port", str(free_port()), *args]
    async with gateway_process(command, child_env(state, {"MOLTBOT_PG_DSN": dsn, **env})) as gw:
        yield gw


async def chat(
    http: aiohttp.ClientSession, gateway: GatewayProcess, text: str, key: str | None = KEY
) -> str:
    headers = {"Authorization": f"Bearer {SECRET}"}
    if key is not None:
        headers["x-moltbot-session-key"] = key
    body = {"model": "moltbot", "messages": [{"role": "user", "content": text}]}
    async with http.post(
        f"{gateway.url}/v1/chat/completions", json=body, headers=headers
    ) as response:
        assert response.status == 200, await response.text()
        return (await response.json())["choices"][0]["message"]["content"]


def user_texts(request: RecordedRequest) -> list[str]:
    return [str(m["content"]) for m in request.messages if m.get("role") == "user"]


def client_session() -> aiohttp.ClientSession:
    # A new connection per request, so SO_REUSEPORT spreads them over the workers.
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(force_close=True),
        timeout=aiohttp.ClientTimeout(total=LIMIT),
    )


# -- one port, several workers ---------------------------------------------------------------


async def test_two_workers_serve_restart_a_killed_one_and_drain_on_sigterm(
    tmp_path: Path, pg_dsn: str
) -> None:
    address = str(tmp_path / "notify.sock")
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(address)
        listener.setblocking(False)
        async with (
            FakeOpenAI() as upstream,
            replica(
                tmp_path, "w", upstream, pg_dsn, "--workers", "2", NOTIFY_SOCKET=address
            ) as gateway,
            client_session() as http,
        ):
            # READY=1 comes from the parent, once both workers listen.
            assert await asyncio.wait_for(loop.sock_recv(listener, 100), LIMIT) == b"READY=1"
            listening = gateway.log[-1]
            assert listening["workers"] == 2 and len(listening["pids"]) == 2
            assert sorted(e["worker"] for e in gateway.log if e["event"] == "worker listening") == [
                0,
                1,
            ]
            served_by = set()
            for i in range(24):  # the kernel hashes each new connection to one of the two
                assert await chat(http, gateway, f"ping {i}", key=None) == (
                    "Hello from fake upstream"
                )
                served_by.add((await gateway.read_log_until("http request"))["worker"])
            assert served_by == {0, 1}

            os.kill(listening["pids"][0], signal.SIGKILL)
            exited = await gateway.read_log_until("worker exited")
            assert (exited["worker"], exited["code"]) == (0, -signal.SIGKILL)
            restarted = await gateway.read_log_until("worker restarted")
            assert restarted["worker"] == 0 and restarted["pid"] not in listening["pids"]
            for i in range(6):
                await chat(http, gateway, f"after restart {i}", key=None)

            # SIGTERM reaches every worker; a stream in flight is finished, then exit 0.
            chunks = [f"part{i} " for i in range(6)]
            upstream.stream(chunks, delay=0.15)
            body = {
                "model": "moltbot",
                "stream": True,
                "messages": [{"role": "user", "content": "go"}],
            }
            async with http.post(
                f"{gateway.url}/v1/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {SECRET}"},
            ) as response:
                assert response.status == 200
                assert (await response.content.readline()).startswith(b"data: ")
                gateway.process.send_signal(signal.SIGTERM)
                rest = (await asyncio.wait_for(response.content.read(), LIMIT)).decode()
            assert await gateway.stop() == 0
            assert await asyncio.wait_for(loop.sock_recv(listener, 100), LIMIT) == b"STOPPING=1"
    text = "".join(
        json.loads(line[6:])["choices"][0]["delta"].get("content", "")
        for line in rest.splitlines()
        if line.startswith("data: {")
    )
    assert text == "".join(chunks[1:]) or text == "".join(chunks)
    assert rest.rstrip().endswith("data: [DONE]")
    events = [e["event"] for e in gateway.log]
    assert events.count("worker stopped") == 2 and events[-1] == "gateway stopped"


# -- replicas on their own ports -----------------------------------------------------------------


async def test_two_replicas_drive_one_conversation_in_order_and_serialise_its_turns(
    tmp_path: Path, pg_dsn: str
) -> None:
    async with (
        FakeOpenAI() as upstream,
        replica(tmp_path, "a", upstream, pg_dsn) as a,
        replica(tmp_path, "b", upstream, pg_dsn) as b,
        client_session() as http,
    ):
        for i in range(6):  # alternately through A and B
            await chat(http, (a, b)[i % 2], f"turn {i}")
        for i, request in enumerate(upstream.requests):
            assert user_texts(request) == [f"turn {j}" for j in range(i + 1)]

        # Two turns of the session at once, one on each replica: they run one after the other,
        # and the second sees the first in its history.
        upstream.stream(["slow ", "one"], delay=0.2).stream(["slow ", "two"], delay=0.2)
        upstream.max_active_streams = 0
        await asyncio.gather(chat(http, a, "together A"), chat(http, b, "together B"))
        assert upstream.max_active_streams == 1
        first, second = upstream.requests[-2:]
        earlier = [f"turn {j}" for j in range(6)]
        assert user_texts(first) in ([*earlier, "together A"], [*earlier, "together B"])
        assert user_texts(second) == [*user_texts(first), *user_texts(second)[-1:]]
        assert len(user_texts(second)) == 8

        # Either replica shows the whole transcript, in order.
        client = await GatewayClient.connect(
            b.url.replace("http://", "ws://"), token=SECRET, client_id="test", mode="test"
        )
        try:
            history = await client.request("chat.history", {"sessionKey": KEY})
        finally:
            await client.close()
        users = [m for m in history["messages"] if m["role"] == "user"]
        assert len(users) == 8 and len(history["messages"]) == 16


async def test_kill_9_of_a_replica_mid_turn_loses_no_turn_and_leaves_no_lock(
    tmp_path: Path, pg_dsn: str
) -> None:
    async with AsyncExitStack() as stack:
        upstream = await stack.enter_async_context(FakeOpenAI())
        a = await stack.enter_async_context(replica(tmp_path, "a", upstream, pg_dsn))
        b = await stack.enter_async_context(replica(tmp_path, "b", upstream, pg_dsn))
        http = await stack.enter_async_context(client_session())
        await chat(http, a, "kept 1")
        await chat(http, a, "kept 2")
        upstream.hang()  # A's next turn holds the session's lock and never ends
        in_flight = asyncio.create_task(chat(http, a, "lost in flight"))
        await upstream.wait_until(lambda: len(upstream.requests) == 3, timeout=LIMIT)
        a.process.kill()
        await a.process.communicate()  # to the end of its output: the pipes are closed here
        started = time.monotonic()
        await chat(http, b, "after the crash")
        assert time.monotonic() - started < LIMIT / 2  # the lock died with A's connection
        assert user_texts(upstream.requests[-1]) == ["kept 1", "kept 2", "after the crash"]
        in_flight.cancel()
        await asyncio.gather(in_flight, return_exceptions=True)


async def test_an_agent_idempotency_key_starts_one_run_across_replicas(
    tmp_path: Path, pg_dsn: str
) -> None:
    async with (
        FakeOpenAI() as upstream,
        replica(tmp_path, "a", upstream, pg_dsn) as a,
        replica(tmp_path, "b", upstream, pg_dsn) as b,
    ):
        on_a = await ws_client(a)
        on_b = await ws_client(b)
        try:
            params = {"message": "once", "idempotencyKey": "key-1", "sessionKey": "idem"}
            first = await on_a.request("agent", params, expect_final=True, timeout=LIMIT)
            again = await on_b.request("agent", params, expect_final=True, timeout=LIMIT)
            assert again == first and first["status"] == "ok"
            assert len(upstream.requests) == 1

            # While the run is still going on B, A answers the repeat when B's run ends.
            upstream.stream(["slow ", "answer"], delay=0.3)
            slow = {"message": "slow", "idempotencyKey": "key-2", "sessionKey": "idem"}
            started = on_b.start("agent", slow, expect_final=True)
            await upstream.wait_until(lambda: len(upstream.requests) == 2, timeout=LIMIT)
            repeat = await on_a.request("agent", slow, expect_final=True, timeout=LIMIT)
            assert repeat == await asyncio.wait_for(started, LIMIT)
            assert repeat["result"]["payloads"][0]["text"] == "slow answer"
            assert len(upstream.requests) == 2
        finally:
            await on_a.close()
            await on_b.close()


async def ws_client(gateway: GatewayProcess) -> GatewayClient:
    url = gateway.url.replace("http://", "ws://")
    return await GatewayClient.connect(url, token=SECRET, client_id="test", mode="test")


async def test_a_websocket_on_replica_b_waits_for_and_aborts_a_run_started_over_http_on_a(
    tmp_path: Path, pg_dsn: str
) -> None:
    key = "agent:main:abortable"
    async with (
        FakeOpenAI() as upstream,
        replica(tmp_path, "a", upstream, pg_dsn) as a,
        replica(tmp_path, "b", upstream, pg_dsn) as b,
        client_session() as http,
    ):
        upstream.hang(after_chunks=1)  # one delta, then nothing until the client goes away
        go = [{"role": "user", "content": "a long job"}]
        async with http.post(
            f"{a.url}/v1/chat/completions",
            json={"model": "moltbot", "stream": True, "messages": go},
            headers={"Authorization": f"Bearer {SECRET}", "x-moltbot-session-key": key},
        ) as response:
            first = await asyncio.wait_for(response.content.readline(), LIMIT)
            run_id = json.loads(first[6:])["id"]
            on_b = await ws_client(b)
            try:
                early = await on_b.request("agent.wait", {"runId": run_id, "timeoutMs": 300})
                assert early == {"runId": run_id, "status": "timeout"}
                waiting = on_b.start("agent.wait", {"runId": run_id, "timeoutMs": 15_000})
                aborted = await on_b.request("chat.abort", {"sessionKey": key, "runId": run_id})
                assert aborted == {"ok": True, "aborted": True, "runIds": [run_id]}
                rest = (await asyncio.wait_for(response.content.read(), LIMIT)).decode()
                ended = await asyncio.wait_for(waiting, LIMIT)
                assert ended["runId"] == run_id and ended["aborted"] is True
                assert (ended["status"], ended["error"]) == ("error", "run aborted (rpc)")
                # Once it has ended, B answers from the store at once.
                later = await on_b.request("agent.wait", {"runId": run_id, "timeoutMs": 0})
                assert later == ended
                nothing = await on_b.request("chat.abort", {"sessionKey": key})
                assert nothing == {"ok": True, "aborted": False, "runIds": []}
                history = await on_b.request("chat.history", {"sessionKey": key})
            finally:
                await on_b.close()
    assert rest.rstrip().endswith("data: [DONE]")
    assert [m["role"] for m in history["messages"]] == ["user", "assistant"]


async def agent_events_to_the_end(client: GatewayClient) -> list[dict[str, Any]]:
    """The `agent` event payloads a client receives, up to a run's lifecycle end."""
    events: list[dict[str, Any]] = []
    async with asyncio.timeout(LIMIT):
        while not events or events[-1]["data"].get("phase") != "end":
            event = await client.next_event(timeout=LIMIT)
            assert event is not None
            if event.name == "agent":
                events.append(event.payload)
    return events


async def test_a_websocket_on_replica_b_follows_a_run_of_replica_a(
    tmp_path: Path, pg_dsn: str
) -> None:
    long_delta = "é" * 4000  # more than one notice holds: it travels in parts
    async with (
        FakeOpenAI() as upstream,
        replica(tmp_path, "a", upstream, pg_dsn) as a,
        replica(tmp_path, "b", upstream, pg_dsn) as b,
    ):
        on_a, on_b = await ws_client(a), await ws_client(b)
        try:
            upstream.stream(["first ", "second ", long_delta, " last"], delay=0.4)
            params = {"message": "go", "idempotencyKey": "followed-1", "sessionKey": "f"}
            final = on_a.start("agent", params, expect_final=True)
            await upstream.wait_until(lambda: len(upstream.requests) == 1, timeout=LIMIT)
            followed = await on_b.request("agent.follow", {"runId": "followed-1"})
            assert followed == {
                "ok": True,
                "runId": "followed-1",
                "following": True,
                "status": "running",
            }
            events = await agent_events_to_the_end(on_b)
            deltas = [e["data"]["delta"] for e in events if e["stream"] == "assistant"]
            assert deltas[-2:] == [long_delta, " last"]  # in order, the long one whole
            seqs = [e["seq"] for e in events]
            assert seqs == sorted(seqs) and all(e["runId"] == "followed-1" for e in events)
            assert (await asyncio.wait_for(final, LIMIT))["status"] == "ok"
            with pytest.raises(GatewayError, match="unknown run id"):
                await on_b.request("agent.follow", {"runId": "no-such-run"})
        finally:
            await on_a.close()
            await on_b.close()


async def test_a_websocket_on_replica_b_follows_a_session_whose_runs_go_to_replica_a(
    tmp_path: Path, pg_dsn: str
) -> None:
    key = "agent:main:watched"
    async with (
        FakeOpenAI() as upstream,
        replica(tmp_path, "a", upstream, pg_dsn) as a,
        replica(tmp_path, "b", upstream, pg_dsn) as b,
        client_session() as http,
    ):
        on_b = await ws_client(b)
        try:
            followed = await on_b.request("agent.follow", {"sessionKey": key})
            assert followed["following"] is True
            await asyncio.sleep(1.0)  # the watch notice reaches A (one NOTIFY)
            for text in ("one", "two"):  # two runs, each seen whole on B
                upstream.stream([f"{text} ", "answered"], delay=0.05)
                reply = await chat(http, a, text, key)
                events = await agent_events_to_the_end(on_b)
                assert {e["sessionKey"] for e in events} == {key}
                assert len({e["runId"] for e in events}) == 1
                assert events[0]["data"].get("phase") == "start"
                deltas = [e["data"]["delta"] for e in events if e["stream"] == "assistant"]
                assert "".join(deltas) == reply == f"{text} answered"
            await chat(http, a, "elsewhere", "agent:main:not-watched")  # not relayed
            stray = []
            async with asyncio.timeout(LIMIT):
                while (event := await on_b.next_event(timeout=1.0)) is not None:
                    if event.name == "agent":
                        stray.append(event.payload)
            assert stray == []
        finally:
            await on_b.close()


async def test_a_chat_reader_on_replica_b_sees_a_turn_that_replica_a_runs(
    tmp_path: Path, pg_dsn: str
) -> None:
    key = "agent:main:read-elsewhere"
    async with (
        FakeOpenAI() as upstream,
        replica(tmp_path, "a", upstream, pg_dsn) as a,
        replica(tmp_path, "b", upstream, pg_dsn) as b,
        client_session() as http,
    ):
        on_b = await ws_client(b)
        try:
            history = await on_b.request("chat.history", {"sessionKey": key})  # reads its chat
            assert history["messages"] == []
            await asyncio.sleep(1.0)  # the watch notice reaches A (one NOTIFY)
            upstream.stream(["read ", "from ", "B"], delay=0.2)
            reply = await chat(http, a, "hello", key)
            updates = []
            async with asyncio.timeout(LIMIT):
                while not updates or updates[-1]["state"] == "delta":
                    event = await on_b.next_event(timeout=LIMIT)
                    assert event is not None
                    if event.name == "chat":
                        updates.append(event.payload)
        finally:
            await on_b.close()
    assert reply == "read from B"
    final = updates[-1]
    assert (final["state"], final["sessionKey"]) == ("final", key)
    assert final["message"]["content"][0]["text"] == reply
    assert all(u["runId"] == final["runId"] for u in updates)
    assert any(u["state"] == "delta" for u in updates)  # streamed, not only the end
