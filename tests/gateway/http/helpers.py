"""Shared helpers for the OpenAI-endpoint tests: requests, SSE parsing, configs, and reading what
reached the fake upstream."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy

from moltbot.config.model import Config
from tests.conftest import TOKEN, Gateway, make_config
from tests.fake_upstreams import FakeCall, FakeUpstream, RecordedRequest, provider_config

CHAT_PATH = "/v1/chat/completions"
DONE = "[DONE]"
# Every wait in these tests is bounded; a broken gateway fails a test in seconds.
WAIT = 5.0


def user(text: Any) -> dict[str, Any]:
    return {"role": "user", "content": text}


# -- client tools, as an SDK client sends them --------------------------------------------------

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
CLOCK = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
}


def assistant_calls(*calls: FakeCall, content: str | None = None) -> dict[str, Any]:
    """The assistant message an SDK client sends back after the model called tools."""
    return {
        "role": "assistant",
        "content": content,
        "tool_calls": [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in calls
        ],
    }


def tool_result(call_id: str, content: str) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": content}


def chat_body(*messages: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A request body; one user message "hi" unless messages are given."""
    return {"model": "moltbot", "messages": list(messages) or [user("hi")], **fields}


def upstream_config(state_dir: Path, *ups: FakeUpstream, **options: Any) -> Config:
    """Providers `up`, `up2`, … for the given fakes (model `m1` each); primary `up/m1`."""
    names = ("up", "up2", "up3")
    providers = tuple(provider_config(fake, name) for fake, name in zip(ups, names, strict=False))
    options.setdefault("primary", "up/m1")
    return make_config(state_dir, providers=providers, **options)


def with_http(config: Config, **changes: Any) -> Config:
    """`config` with `gateway.http` fields replaced (make_config only sets the enabled flag)."""
    http = dataclasses.replace(config.gateway.http, **changes)
    return dataclasses.replace(config, gateway=dataclasses.replace(config.gateway, http=http))


@dataclass
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error(self) -> dict[str, Any]:
        """The OpenAI error object, after checking the envelope's shape."""
        document = self.json()
        assert set(document) == {"error"}, document
        assert set(document["error"]) == {"message", "type", "param", "code"}, document
        return document["error"]


async def post_chat(
    gateway: Gateway,
    body: Any,
    *,
    token: str | None = TOKEN,
    headers: dict[str, str] | None = None,
) -> Reply:
    """POST to the chat endpoint; `body` as JSON, or raw bytes / text as they are."""
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    all_headers = {"Content-Type": "application/json", **gateway.headers(token, **(headers or {}))}
    return await request(gateway, "POST", CHAT_PATH, data=data, headers=all_headers)


async def request(gateway: Gateway, method: str, path: str, **kwargs: Any) -> Reply:
    kwargs.setdefault("headers", gateway.headers())
    timeout = aiohttp.ClientTimeout(total=30)
    async with (
        aiohttp.ClientSession(timeout=timeout) as http,
        http.request(method, gateway.url + path, **kwargs) as resp,
    ):
        return Reply(resp.status, resp.headers, await resp.read())


def sse_payloads(raw: bytes) -> list[str]:
    """The `data:` payloads of a whole SSE body, checking the framing exactly: every event is a
    single `data: <payload>` line followed by a blank line, nothing else."""
    text = raw.decode()
    assert text.endswith("\n\n"), text[-200:]
    payloads = []
    for event in text[:-2].split("\n\n"):
        assert event.startswith("data: "), event
        assert "\n" not in event, event
        payloads.append(event.removeprefix("data: "))
    return payloads


def sse_chunks(raw: bytes) -> list[dict[str, Any]]:
    """The JSON frames of a whole SSE body that ends with `data: [DONE]` (and has no other)."""
    payloads = sse_payloads(raw)
    assert payloads[-1] == DONE, payloads
    assert DONE not in payloads[:-1], payloads
    return [json.loads(p) for p in payloads[:-1]]


def streamed_text(chunks: list[dict[str, Any]]) -> str:
    return "".join(
        choice["delta"].get("content") or ""
        for chunk in chunks
        for choice in chunk.get("choices", [])
    )


async def next_event(resp: aiohttp.ClientResponse) -> str:
    """The next SSE event block (without its blank line) of a response being read."""
    async with asyncio.timeout(WAIT):
        block = await resp.content.readuntil(b"\n\n")
    assert block.endswith(b"\n\n"), block  # EOF before a full event
    return block[:-2].decode()


def data_of(event: str) -> Any:
    assert event.startswith("data: "), event
    payload = event.removeprefix("data: ")
    return payload if payload == DONE else json.loads(payload)


# -- what reached the upstream ---------------------------------------------------------------


def system_prompt(recorded: RecordedRequest) -> str:
    """The system prompt of an OpenAI-format upstream request (its first message)."""
    first = recorded.messages[0]
    assert first["role"] == "system", recorded.messages
    return first["content"]


def turns(recorded: RecordedRequest) -> list[tuple[str, str]]:
    """(role, content) of the conversation sent upstream, system prompt left out."""
    return [(m["role"], m["content"]) for m in recorded.messages if m["role"] != "system"]


def agent_of(recorded: RecordedRequest) -> str:
    """The agent that ran the turn, from the runtime line of its system prompt."""
    line = next(x for x in system_prompt(recorded).splitlines() if x.startswith("Runtime: "))
    return line.split("agent=", 1)[1].split(" ", 1)[0]
