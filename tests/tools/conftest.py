"""Gateways whose model calls the agent's tools: a scripted upstream, a temporary workspace."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from moltbot.config.model import (
    AgentConfig,
    Config,
    ExecConfig,
    ToolRules,
    ToolsConfig,
    WebFetchConfig,
)
from tests.conftest import TOKEN, Gateway, make_config
from tests.fake_tool_upstream import ToolUpstream, tool_provider

FULL = ToolRules(profile="full")


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "workspace"
    path.mkdir()
    return path


def tool_config(
    state_dir: Path,
    up: ToolUpstream,
    workspace: Path,
    *,
    rules: ToolRules = FULL,
    exec_config: ExecConfig | None = None,
    web: WebFetchConfig | None = None,
    max_tool_rounds: int = 8,
    agents: tuple[AgentConfig, ...] = (),
    **overrides: Any,
) -> Config:
    return make_config(
        state_dir,
        providers=(tool_provider(up),),
        primary="up/m1",
        workspace=workspace,
        max_tool_rounds=max_tool_rounds,
        agents=agents,
        tools=ToolsConfig(rules, exec_config or ExecConfig(sandbox="off"), web or WebFetchConfig()),
        **overrides,
    )


async def chat(
    gateway: Gateway,
    text: str = "go",
    *,
    session: str | None = None,
    tools: list[dict[str, Any]] | None = None,
    messages: list[dict[str, Any]] | None = None,
    status: int = 200,
) -> dict[str, Any]:
    """POST /v1/chat/completions (not streamed); the JSON answer."""
    body: dict[str, Any] = {
        "model": "moltbot",
        "messages": messages or [{"role": "user", "content": text}],
    }
    if tools is not None:
        body["tools"] = tools
    headers = {"Authorization": f"Bearer {TOKEN}"}
    if session is not None:
        headers["x-moltbot-session-key"] = session
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{gateway.url}/v1/chat/completions", json=body, headers=headers
        ) as response:
            assert response.status == status, await response.text()
            return await response.json()


def answer_text(answer: dict[str, Any]) -> str:
    return answer["choices"][0]["message"]["content"] or ""


def function_tool(name: str) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {"name": name, "parameters": {"type": "object", "properties": {}}},
    }
