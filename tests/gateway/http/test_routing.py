"""Which agent and session a request runs in, and what prompt it becomes, checked by what
reached the fake upstream and by the session store."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from moltbot.config.model import AgentConfig
from tests.conftest import Gateway, StartGateway
from tests.fake_upstreams import FakeAnthropic, FakeOpenAI
from tests.gateway.http.helpers import (
    agent_of,
    chat_body,
    post_chat,
    system_prompt,
    turns,
    upstream_config,
    user,
)

# `beta` is the configured default, so "the default agent" and "main" can be told apart.
AGENTS = (AgentConfig(id="alpha"), AgentConfig(id="beta", default=True), AgentConfig(id="gamma"))
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


async def _gateway(start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI) -> Gateway:
    return await start_gateway(upstream_config(state_dir, up, agents=AGENTS))


async def _session_keys(gateway: Gateway) -> list[str]:
    sessions, _ = await gateway.runtime.store.list()
    return sorted(s.key for s in sessions)


def _run_session_keys(gateway: Gateway) -> list[str]:
    """The session key of every run started from now on (stateless ones are not stored)."""
    keys: list[str] = []
    gateway.runtime.bus.subscribe(
        lambda e: keys.append(e.session_key) if e.phase == "start" else None
    )
    return keys


async def _chat(gateway: Gateway, body: dict[str, Any], **headers: str) -> dict[str, Any]:
    reply = await post_chat(gateway, body, headers=headers)
    assert reply.status == 200, reply.body
    return reply.json()


ROUTES = [
    ("moltbot", {}, "beta"),
    ("moltbot/default", {}, "beta"),
    ("moltbot:default", {}, "beta"),
    ("moltbot:gamma", {}, "gamma"),
    ("moltbot/gamma", {}, "gamma"),
    ("agent:gamma", {}, "gamma"),
    ("MOLTBOT/Gamma", {}, "gamma"),
    ("moltbot/alpha", {}, "alpha"),
    ("moltbot:gamma", {"x-moltbot-agent-id": "alpha"}, "alpha"),
    ("moltbot/default", {"x-moltbot-agent-id": "gamma"}, "gamma"),
    ("moltbot", {"x-moltbot-agent-id": " Alpha "}, "alpha"),
    ("moltbot:gamma", {"x-moltbot-agent": "alpha"}, "alpha"),
]


@pytest.mark.parametrize(
    ("model", "headers", "agent"),
    ROUTES,
    ids=[f"{m}+{'+'.join(f'{k}={v.strip()}' for k, v in h.items())}" for m, h, _ in ROUTES],
)
async def test_agent_from_header_or_model(
    start_gateway: StartGateway,
    state_dir: Path,
    up: FakeOpenAI,
    model: str,
    headers: dict[str, str],
    agent: str,
) -> None:
    gateway = await _gateway(start_gateway, state_dir, up)
    run_keys = _run_session_keys(gateway)
    document = await _chat(gateway, chat_body(user("who runs this?"), model=model), **headers)
    assert document["model"] == model
    [sent] = up.requests
    assert agent_of(sent) == agent
    assert turns(sent) == [("user", "who runs this?")]
    [key] = run_keys
    assert re.fullmatch(rf"agent:{agent}:openai:{UUID}", key), key


async def test_session_key_header_is_used_verbatim(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI
) -> None:
    gateway = await _gateway(start_gateway, state_dir, up)
    key = "agent:gamma:openai:custom"
    await _chat(gateway, chat_body(user("one")), **{"x-moltbot-session-key": key})
    await _chat(gateway, chat_body(user("two"), user="ignored"), **{"x-moltbot-session-key": key})
    assert await _session_keys(gateway) == [key]
    assert [agent_of(r) for r in up.requests] == ["gamma", "gamma"]
    # The same session: the second turn carries the first.
    assert turns(up.requests[1]) == [("user", "one"), ("assistant", "one"), ("user", "two")]


async def test_bare_session_key_header_belongs_to_the_requested_agent(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI
) -> None:
    gateway = await _gateway(start_gateway, state_dir, up)
    await _chat(gateway, chat_body(model="moltbot/alpha"), **{"x-moltbot-session-key": "desk"})
    assert await _session_keys(gateway) == ["agent:alpha:desk"]
    assert agent_of(up.requests[0]) == "alpha"


@pytest.mark.parametrize(
    ("model", "key"),
    [
        ("moltbot", "agent:beta:openai-user:alice"),
        ("moltbot/gamma", "agent:gamma:openai-user:alice"),
    ],
)
async def test_user_field_names_the_session(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI, model: str, key: str
) -> None:
    gateway = await _gateway(start_gateway, state_dir, up)
    await _chat(gateway, chat_body(user("hello"), model=model, user="Alice"))
    await _chat(gateway, chat_body(user("again"), model=model, user="ALICE"))
    assert await _session_keys(gateway) == [key]
    session = await gateway.runtime.store.get(key)
    assert session is not None and session.turns == 2


async def test_without_user_every_request_is_a_fresh_session(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI
) -> None:
    gateway = await _gateway(start_gateway, state_dir, up)
    run_keys = _run_session_keys(gateway)
    await _chat(gateway, chat_body(user("remember 42")))
    await _chat(gateway, chat_body(user("what number?")))
    assert len(set(run_keys)) == 2
    assert all(re.fullmatch(rf"agent:beta:openai:{UUID}", k) for k in run_keys)
    assert turns(up.requests[1]) == [("user", "what number?")]
    # No one can continue a stateless session, so nothing of it is kept.
    assert await _session_keys(gateway) == []


async def test_sampling_fields_reach_the_upstream_exactly(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI
) -> None:
    gateway = await _gateway(start_gateway, state_dir, up)
    sampling = {
        "temperature": 0.7,
        "top_p": 0.9,
        "max_tokens": 77,
        "stop": ["END", "STOP"],
        "seed": 42,
        "presence_penalty": 0.5,
        "frequency_penalty": -1.25,
    }
    await _chat(gateway, chat_body(**sampling))
    await _chat(gateway, chat_body(temperature=0, stop="halt"))
    await _chat(gateway, chat_body(max_tokens=10, max_completion_tokens=20))
    await _chat(gateway, chat_body())
    fields = set(sampling)
    full, partial, capped, bare = (r.json for r in up.requests)
    assert {k: v for k, v in full.items() if k in fields} == sampling
    assert {k: v for k, v in partial.items() if k in fields} == {"temperature": 0, "stop": ["halt"]}
    assert {k: v for k, v in capped.items() if k in fields} == {"max_tokens": 20}
    assert not fields & set(bare)
    assert "max_completion_tokens" not in capped


async def test_sampling_fields_reach_an_anthropic_upstream_in_its_names(
    start_gateway: StartGateway, state_dir: Path
) -> None:
    async with FakeAnthropic(reply="ok") as up:
        gateway = await start_gateway(upstream_config(state_dir, up))
        body = chat_body(temperature=0.3, top_p=0.5, max_completion_tokens=99, stop=["###"])
        await _chat(gateway, body)
    sent = up.requests[0].json
    assert (sent["temperature"], sent["top_p"], sent["max_tokens"]) == (0.3, 0.5, 99)
    assert sent["stop_sequences"] == ["###"]


async def test_system_and_developer_messages_become_the_system_prompt(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI
) -> None:
    gateway = await _gateway(start_gateway, state_dir, up)
    messages = [
        {"role": "system", "content": "Answer in French."},
        {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
        user("Hello"),
    ]
    await _chat(gateway, {"model": "moltbot", "messages": messages})
    [sent] = up.requests
    prompt = system_prompt(sent)
    assert "## Request Context\nAnswer in French.\n\nBe brief.\n" in prompt
    assert turns(sent) == [("user", "Hello")]  # a single message goes bare, no markers


HISTORY_CASES = [
    (
        [
            {"role": "system", "content": "You are a helpful assistant."},
            user("Hello, who are you?"),
            {"role": "assistant", "content": "I am Claude."},
            user("What did I just ask you?"),
        ],
        [
            ("user", "Hello, who are you?"),
            ("assistant", "I am Claude."),
            ("user", "What did I just ask you?"),
        ],
    ),
    (
        [user("first"), {"role": "assistant", "content": "ok"}, user(" second ")],
        [("user", "first"), ("assistant", "ok"), ("user", " second ")],
    ),
    ([{"role": "system", "content": "sys"}, user("Hello")], [("user", "Hello")]),
]


@pytest.mark.parametrize(("messages", "expected"), HISTORY_CASES, ids=range(len(HISTORY_CASES)))
async def test_earlier_messages_reach_the_model_as_messages(
    start_gateway: StartGateway,
    state_dir: Path,
    up: FakeOpenAI,
    messages: list[dict[str, Any]],
    expected: list[tuple[str, str]],
) -> None:
    """Each earlier message keeps its role: no history-context block flattens them."""
    gateway = await _gateway(start_gateway, state_dir, up)
    await _chat(gateway, {"model": "moltbot", "messages": messages})
    [sent] = up.requests
    assert turns(sent) == expected


@pytest.mark.parametrize(
    "parts",
    [
        [{"type": "text", "text": "hello"}, {"type": "input_text", "text": "world"}],
        [{"type": "input_text", "input_text": "hello"}, {"input_text": "world"}],
    ],
    ids=["text+input_text", "input_text-key"],
)
async def test_text_content_parts_are_joined_by_newlines(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI, parts: list[dict[str, Any]]
) -> None:
    gateway = await _gateway(start_gateway, state_dir, up)
    document = await _chat(gateway, chat_body(user(parts)))
    assert turns(up.requests[0]) == [("user", "hello\nworld")]
    assert document["choices"][0]["message"]["content"] == "hello\nworld"
