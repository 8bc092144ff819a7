"""Many streams at once, and clients that hang up: every client gets exactly its own reply,
and a client that leaves aborts its run and closes the upstream request."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from moltbot.agents.runtime import Run
from tests.conftest import Gateway, StartGateway
from tests.fake_upstreams import FakeOpenAI, RecordedRequest, echo_last_user
from tests.gateway.http.helpers import (
    CHAT_PATH,
    WAIT,
    chat_body,
    data_of,
    next_event,
    upstream_config,
    user,
)

STREAMS = 50


class GatedOpenAI(FakeOpenAI):
    """Holds every answer until `gate` requests are in, so that they all stream at once."""

    def __init__(self, gate: int) -> None:
        super().__init__(reply=_reply)
        self.gate = gate

    def _default_behaviour(self) -> Any:
        answer = super()._default_behaviour()

        async def gated(request: Any, recorded: RecordedRequest) -> Any:
            await self.wait_until(lambda: len(self.requests) >= self.gate, timeout=WAIT)
            return await answer(request, recorded)

        return gated


def _reply(request: RecordedRequest) -> str:
    """Several deltas, each naming the request, so that any mix-up shows."""
    token = echo_last_user(request)
    return f"{token} says {token} and {token} again"


async def test_fifty_concurrent_streams_each_get_their_own_reply(
    start_gateway: StartGateway, state_dir: Path
) -> None:
    async with GatedOpenAI(gate=STREAMS) as up:
        gateway = await start_gateway(upstream_config(state_dir, up, max_concurrent=64))
        async with gateway.openai() as client:

            async def one(i: int) -> tuple[str, set[str], str]:
                stream = await client.chat.completions.create(
                    model="moltbot",
                    messages=[user(f"token-{i:02d}")],
                    stream=True,
                    user=f"client-{i:02d}",
                )
                chunks = [chunk async for chunk in stream]
                text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
                return text, {c.id for c in chunks}, chunks[-1].choices[0].finish_reason

            results = await asyncio.gather(*(one(i) for i in range(STREAMS)))
    assert up.max_active_streams == STREAMS  # all upstream answers were open at the same time
    for i, (text, ids, finish) in enumerate(results):
        token = f"token-{i:02d}"
        assert text == f"{token} says {token} and {token} again"
        assert len(ids) == 1 and finish == "stop"
    assert len({next(iter(ids)) for _, ids, _ in results}) == STREAMS
    sessions, total = await gateway.runtime.store.list(limit=100)
    assert total == STREAMS
    for session in sessions:
        i = session.key.rsplit("-", 1)[1]
        messages = await gateway.runtime.store.messages(session.key)
        assert [m.content for m in messages] == [
            f"token-{i}",
            f"token-{i} says token-{i} and token-{i} again",
        ]


async def _check_aborted(gateway: Gateway, run: Run, key: str, partial: str) -> None:
    async with asyncio.timeout(WAIT):
        await run.wait()
    assert run.status == "aborted"
    messages = await gateway.runtime.store.messages(key)
    assert [(m.role, m.content, m.status) for m in messages] == [
        ("user", "alpha beta gamma", "aborted"),
        ("assistant", partial, "aborted"),
    ]
    session = await gateway.runtime.store.get(key)
    assert session is not None and session.aborted_last_run and session.turns == 0


async def _still_serving(gateway: Gateway) -> None:
    async with gateway.openai() as client:
        completion = await client.chat.completions.create(
            model="moltbot", messages=[user("still alive")]
        )
    assert completion.choices[0].message.content == "still alive"


async def test_disconnect_mid_stream_aborts_the_run_and_closes_the_upstream(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI
) -> None:
    gateway = await start_gateway(upstream_config(state_dir, up))
    up.hang(after_chunks=2)
    key = "agent:main:openai-user:leaver"
    body = chat_body(user("alpha beta gamma"), stream=True, user="leaver")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        resp = await http.post(gateway.url + CHAT_PATH, json=body, headers=gateway.headers())
        completion_id = data_of(await next_event(resp))["id"]
        assert data_of(await next_event(resp))["choices"][0]["delta"] == {"content": "alpha"}
        assert data_of(await next_event(resp))["choices"][0]["delta"] == {"content": " beta"}
        run = gateway.runtime.get_run(completion_id)
        assert run is not None and run.status == "running"
        resp.close()  # hang up mid-answer
        await up.wait_disconnect(timeout=1.0)
    await _check_aborted(gateway, run, key, "alpha beta")
    await _still_serving(gateway)


async def test_sdk_stream_closed_early_aborts_the_run(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI
) -> None:
    gateway = await start_gateway(upstream_config(state_dir, up))
    up.hang(after_chunks=1)
    key = "agent:main:openai-user:leaver"
    async with gateway.openai() as client:
        stream = await client.chat.completions.create(
            model="moltbot", messages=[user("alpha beta gamma")], stream=True, user="leaver"
        )
        async for chunk in stream:
            if chunk.choices[0].delta.content:
                assert chunk.choices[0].delta.content == "alpha"
                completion_id = chunk.id
                break
        # Taken while it runs: an HTTP run is not kept findable once it has ended.
        run = gateway.runtime.get_run(completion_id)
        assert run is not None
        await stream.close()
        await up.wait_disconnect(timeout=1.0)
    await _check_aborted(gateway, run, key, "alpha")
    await _still_serving(gateway)


async def test_non_streaming_client_that_gives_up_aborts_the_run(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI
) -> None:
    gateway = await start_gateway(upstream_config(state_dir, up))
    up.hang()  # the upstream never answers
    key = "agent:main:openai-user:leaver"
    body = chat_body(user("alpha beta gamma"), user="leaver")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        call = asyncio.create_task(
            http.post(gateway.url + CHAT_PATH, json=body, headers=gateway.headers())
        )
        await up.wait_until(lambda: len(up.requests) == 1)
        [run] = gateway.runtime.active_runs(key)  # it reached the upstream: it is running
        call.cancel()  # the client gives up while waiting for the answer
        await asyncio.gather(call, return_exceptions=True)
        await up.wait_disconnect(timeout=1.0)
    await _check_aborted(gateway, run, key, "")
    await _still_serving(gateway)
