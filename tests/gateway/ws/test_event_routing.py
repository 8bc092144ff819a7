"""The hub's routing of run events: a failure while building or sending one event must not keep
a run's end from anyone, and runs nobody watches cost the hub nothing."""

from __future__ import annotations

from typing import Any

import aiohttp

from moltbot.client import GatewayClient
from moltbot.gateway.ws import HUB_KEY
from tests.conftest import TOKEN, Gateway, make_config
from tests.fake_upstreams import FakeOpenAI, provider_config
from tests.gateway.ws.wsutil import collect_until, is_agent_end, is_chat_end

LONE = "\ud800"


async def end_for_everyone(gateway: Gateway, open_client: Any, up: FakeOpenAI) -> None:
    """A run on `main` that stalls after its first chunk, with a chat.send client, a session
    follower and an agent.wait waiter; it is aborted, and each of them must learn of its end."""
    chatter, follower = await open_client(gateway), await open_client(gateway)
    assert (await follower.request("agent.follow", {"sessionKey": "main"}))["following"]
    up.hang(after_chunks=1)
    params = {"sessionKey": "main", "message": "go", "idempotencyKey": "run-1"}
    await chatter.request("chat.send", params)
    await up.wait_until(lambda: up.active_streams == 1)
    # Sent first on the same socket, so the waiter is registered before the abort ends the run.
    waited = chatter.start("agent.wait", {"runId": "run-1", "timeoutMs": 5000})
    await chatter.request("chat.abort", {"sessionKey": "main"})
    chat_end = (await collect_until(chatter, is_chat_end("run-1")))[-1]
    assert chat_end.payload["state"] == "aborted"
    await collect_until(follower, is_agent_end("run-1"))
    result = await waited
    assert (result["status"], result["aborted"]) == ("error", True)
    assert chat_end.payload["message"]["content"][0]["text"].startswith("a")


async def test_a_reply_with_a_lone_surrogate_still_ends_the_run_for_everyone(
    state_dir, start_ws, open_client
):
    # A model's output decoded from JSON can carry lone surrogates; they go out escaped.
    async with FakeOpenAI(reply=f"a{LONE} b c") as up:
        config = make_config(state_dir, providers=(provider_config(up),), primary="up/m1")
        await end_for_everyone(await start_ws(config), open_client, up)


class UnwritableSocket:
    """A connection whose every send fails, standing in for a bug in one socket's path."""

    id = "unwritable"

    def send_event(self, *args: Any, **kwargs: Any) -> bool:
        raise RuntimeError("cannot queue")


async def test_a_socket_that_cannot_be_sent_to_does_not_stop_the_others(
    state_dir, start_ws, open_client
):
    async with FakeOpenAI(reply="a b c") as up:
        config = make_config(state_dir, providers=(provider_config(up),), primary="up/m1")
        gateway = await start_ws(config)
        hub = gateway.app[HUB_KEY]
        broken: Any = UnwritableSocket()
        hub.register(broken)
        for kind in ("session", "chat"):
            hub.routes.add(broken, kind, "agent:main:main")
        try:
            await end_for_everyone(gateway, open_client, up)
        finally:
            hub.unregister(broken)


async def http_turn(gateway: Gateway, http: aiohttp.ClientSession, session: str) -> str:
    body = {"model": "moltbot", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"Authorization": f"Bearer {TOKEN}", "x-moltbot-session-key": session}
    async with http.post(gateway.url + "/v1/chat/completions", json=body, headers=headers) as r:
        assert r.status == 200
        return (await r.json())["id"]


async def test_runs_nobody_watches_cost_the_hub_nothing(state_dir, start_ws, open_client, http):
    gateway = await start_ws(make_config(state_dir))
    hub = gateway.app[HUB_KEY]
    followed: list[int] = []  # after each event: how many runs the hub keeps chat views for
    gateway.runtime.bus.subscribe(lambda _: followed.append(len(hub.chat)))

    await http_turn(gateway, http, "agent:main:quiet")  # no WS connection at all
    client: GatewayClient = await open_client(gateway)
    await client.request("chat.history", {"sessionKey": "elsewhere"})
    await http_turn(gateway, http, "agent:main:quiet")  # connected, but reading another session
    assert followed and set(followed) == {0}

    # Once someone reads the session, its runs are followed and its chat events go out.
    await client.request("chat.history", {"sessionKey": "quiet"})
    followed.clear()
    run_id = await http_turn(gateway, http, "agent:main:quiet")
    final = (await collect_until(client, is_chat_end(run_id)))[-1]
    assert final.payload["state"] == "final" and max(followed) == 1
    assert len(hub.chat) == 0  # and forgotten at its end
