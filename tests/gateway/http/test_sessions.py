"""Conversations carried for an OpenAI `user`: across calls and across a gateway restart."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import StartGateway, make_config
from tests.fake_upstreams import FakeOpenAI
from tests.gateway.http.helpers import chat_body, post_chat, turns, upstream_config, user

KEY = "agent:main:openai-user:bob"


async def test_history_is_carried_across_calls_for_the_same_user(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI
) -> None:
    gateway = await start_gateway(upstream_config(state_dir, up))
    up.stream(["Nice", " to", " meet", " you"])
    async with gateway.openai() as client:
        await client.chat.completions.create(
            model="moltbot", user="bob", messages=[user("My name is Bob.")]
        )
        stream = await client.chat.completions.create(
            model="moltbot", user="bob", messages=[user("What is my name?")], stream=True
        )
        second = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        await client.chat.completions.create(
            model="moltbot", user="someone-else", messages=[user("Who am I?")]
        )
    assert second == "What is my name?"
    assert turns(up.requests[0]) == [("user", "My name is Bob.")]
    assert turns(up.requests[1]) == [
        ("user", "My name is Bob."),
        ("assistant", "Nice to meet you"),
        ("user", "What is my name?"),
    ]
    assert turns(up.requests[2]) == [("user", "Who am I?")]  # another user, another session
    messages = await gateway.runtime.store.messages(KEY)
    assert [(m.role, m.content, m.status) for m in messages] == [
        ("user", "My name is Bob.", "ok"),
        ("assistant", "Nice to meet you", "ok"),
        ("user", "What is my name?", "ok"),
        ("assistant", "What is my name?", "ok"),
    ]


async def test_a_client_resending_the_whole_chat_gets_each_turn_once(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI
) -> None:
    """Open WebUI with `user` on, or any SDK app keeping its own history, sends every earlier
    message each time: the session already holds them, so the model sees each turn once."""
    gateway = await start_gateway(upstream_config(state_dir, up))
    up.stream(["Nice", " to", " meet", " you"])
    chat = [user("My name is Bob.")]
    async with gateway.openai() as client:
        await client.chat.completions.create(model="moltbot", user="bob", messages=chat)
        chat += [{"role": "assistant", "content": "Nice to meet you"}, user("What is my name?")]
        await client.chat.completions.create(model="moltbot", user="bob", messages=chat)
        # A chat that does not end where the session does (edited, or another conversation)
        # still reaches the model whole, after the history.
        other = [user("Hi"), {"role": "assistant", "content": "Hello"}, user("Again")]
        await client.chat.completions.create(model="moltbot", user="bob", messages=other)
    assert turns(up.requests[1]) == [
        ("user", "My name is Bob."),
        ("assistant", "Nice to meet you"),
        ("user", "What is my name?"),
    ]
    assert turns(up.requests[2]) == [
        *turns(up.requests[1]),
        ("assistant", "What is my name?"),
        ("user", "Hi"),
        ("assistant", "Hello"),
        ("user", "Again"),
    ]
    stored = [(m.role, m.content) for m in await gateway.runtime.store.messages(KEY)]
    assert stored[:4] == [
        ("user", "My name is Bob."),
        ("assistant", "Nice to meet you"),
        ("user", "What is my name?"),
        ("assistant", "What is my name?"),
    ]
    assert [m for m, _ in stored[4:]] == ["user", "assistant"]  # only "Again" and its answer


async def test_history_survives_a_gateway_restart(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI
) -> None:
    config = upstream_config(state_dir, up)
    first = await start_gateway(config)
    async with first.openai() as client:
        await client.chat.completions.create(
            model="moltbot", user="bob", messages=[user("Remember the word lantern.")]
        )
    await first.stop()

    second = await start_gateway(config)
    async with second.openai() as client:
        await client.chat.completions.create(
            model="moltbot", user="bob", messages=[user("Which word?")]
        )
    assert turns(up.requests[1]) == [
        ("user", "Remember the word lantern."),
        ("assistant", "Remember the word lantern."),
        ("user", "Which word?"),
    ]
    session = await second.runtime.store.get(KEY)
    assert session is not None and session.turns == 2


async def test_user_and_session_key_header_have_length_caps(
    start_gateway: StartGateway, state_dir: Path
) -> None:
    gateway = await start_gateway(make_config(state_dir))
    for value, status in (("u" * 1_000_000, 400), ("u" * 257, 400), ("u" * 256, 200)):
        reply = await post_chat(gateway, chat_body(user=value))
        assert reply.status == status, reply.body
        if status == 400:
            assert reply.error["param"] == "user"
            assert "at most 256" in reply.error["message"] and len(reply.body) < 1000
    header = "x-moltbot-session-key"
    for length, status in ((513, 400), (512, 200)):
        reply = await post_chat(gateway, chat_body(), headers={header: "k" * length})
        assert reply.status == status, reply.body
        if status == 400:
            assert reply.error["param"] == header and "at most 512" in reply.error["message"]
    keys = [info.key for info in (await gateway.runtime.store.list())[0]]
    assert sorted(len(key) for key in keys) == [len("agent:main:openai-user:") + 256, 11 + 512]
