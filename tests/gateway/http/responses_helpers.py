"""Shared helpers for the Responses-endpoint tests: configs, requests, the named-event wire."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from moltbot.config.model import Config, ModelConfig
from tests.conftest import TOKEN, Gateway, make_config
from tests.fake_upstreams import FakeUpstream, RecordedRequest, provider_config
from tests.gateway.http.helpers import Reply, request, with_http

RESPONSES_PATH = "/v1/responses"
# The smallest valid PNG: 1x1, transparent.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
PNG_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()


def responses_config(
    state_dir: Path, *ups: FakeUpstream, images: bool = False, **options: Any
) -> Config:
    """The Responses endpoint on (chat completions off), providers `up`, `up2` for the fakes
    (model `m1` each, taking images when `images`), primary `up/m1`."""
    model = ModelConfig("m1", "m1", input=("text", "image") if images else ("text",))
    names = ("up", "up2", "up3")
    providers = tuple(
        provider_config(fake, name, [model]) for fake, name in zip(ups, names, strict=False)
    )
    if ups:
        options.setdefault("primary", "up/m1")
    config = make_config(state_dir, providers=providers, chat=False, **options)
    return with_http(config, responses_enabled=True)


async def post_responses(
    gateway: Gateway,
    body: Any,
    *,
    token: str | None = TOKEN,
    headers: dict[str, str] | None = None,
) -> Reply:
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    all_headers = {"Content-Type": "application/json", **gateway.headers(token, **(headers or {}))}
    return await request(gateway, "POST", RESPONSES_PATH, data=data, headers=all_headers)


def named_events(raw: bytes) -> list[dict[str, Any]]:
    """The events of a whole Responses SSE body, checking the framing exactly: every event is
    `event: <type>` then `data: <json>` whose `type` is the same, then a blank line; comments
    (keep-alives) are skipped; no `[DONE]`."""
    text = raw.decode()
    assert text.endswith("\n\n"), text[-200:]
    events = []
    for block in text[:-2].split("\n\n"):
        if block.startswith(": "):
            assert "\n" not in block, block
            continue
        head, _, data = block.partition("\n")
        assert head.startswith("event: "), block
        assert data.startswith("data: ") and "\n" not in data, block
        event = json.loads(data.removeprefix("data: "))
        assert event["type"] == head.removeprefix("event: "), block
        events.append(event)
    assert "[DONE]" not in text
    return events


def event_types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def user_item(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def tool_messages(recorded: RecordedRequest) -> list[dict[str, Any]]:
    """The assistant tool-call and tool-result messages a request sent upstream."""
    return [
        m for m in recorded.messages if m.get("role") == "tool" or m.get("tool_calls") is not None
    ]


def arguments_of(recorded: RecordedRequest) -> list[Any]:
    """The parsed arguments of every tool call in the request's messages, in order."""
    return [
        json.loads(call["function"]["arguments"])
        for message in recorded.messages
        for call in message.get("tool_calls") or ()
    ]
