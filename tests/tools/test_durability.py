"""kill -9 of a real gateway process while a tool runs: the session keeps whole turns only."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp

from tests.fake_tool_upstream import Call, Reply, SeenRequest, ToolUpstream
from tests.process import child_env, free_port, gateway_process, write_config
from tests.tools.test_exec import wait_file

SECRET = "tools-durability-9c1e"
KEY = "agent:main:durable"


def script(request: SeenRequest) -> Reply:
    if request.last_user() == "run the slow one" and not request.tool_results():
        return Reply(
            text="Starting.",
            calls=(Call("exec", {"command": "echo $$ > shell.pid; exec sleep 30"}),),
        )
    return Reply(text=f"answer to {request.last_user()}")


async def post(url: str, text: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {SECRET}", "x-moltbot-session-key": KEY}
    body = {"model": "moltbot", "messages": [{"role": "user", "content": text}]}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{url}/v1/chat/completions", json=body, headers=headers) as reply:
            assert reply.status == 200, await reply.text()
            return await reply.json()


def stored(database: Path) -> list[tuple[str, str, str]]:
    with contextlib.closing(sqlite3.connect(database)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        rows = conn.execute(
            "SELECT role, content, status FROM messages WHERE session_key = ? ORDER BY id", (KEY,)
        )
        return list(rows)


async def test_kill_9_mid_tool_leaves_the_session_consistent(tmp_path: Path, state_dir: Path):
    workspace = tmp_path / "workspace"
    async with ToolUpstream(script) as up:
        config = {
            "gateway": {
                "auth": {"token": SECRET},
                "http": {"endpoints": {"chatCompletions": {"enabled": True}}},
            },
            "models": {"providers": {"up": {"baseUrl": up.base_url, "api": "openai-completions",
                                            "models": [{"id": "m1", "name": "m1"}]}}},
            "agents": {"defaults": {"model": "up/m1", "workspace": str(workspace)}},
            "tools": {
                "profile": "coding",
                "exec": {"security": "full", "ask": "off", "sandbox": "off"},
            },
        }  # fmt: skip
        path = write_config(state_dir / "moltbot.json", config)
        args = ["gateway", "--config", str(path), "--port", str(free_port())]
        async with gateway_process(args, child_env(state_dir)) as gateway:
            assert (await post(gateway.url, "hello"))["choices"][0]["message"]["content"]
            slow = asyncio.create_task(post(gateway.url, "run the slow one"))
            shell = int(await wait_file(workspace / "shell.pid"))  # the tool is running
            gateway.process.kill()  # SIGKILL: no cleanup of any kind
            await gateway.process.wait()
            with contextlib.suppress(aiohttp.ClientError, AssertionError):
                await slow
        # Direct mode cannot outlive-proof its commands (the sandbox's --die-with-parent can).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(shell, signal.SIGKILL)
        database = state_dir / "sessions.sqlite"
        assert stored(database) == [
            ("user", "hello", "ok"),
            ("assistant", "answer to hello", "ok"),
        ]
        async with gateway_process(args, child_env(state_dir)) as gateway:
            answer = await post(gateway.url, "and now?")
        assert answer["choices"][0]["message"]["content"] == "answer to and now?"
    roles = [(m["role"], m.get("content")) for m in up.requests[-1].messages[1:]]
    assert roles == [
        ("user", "hello"),
        ("assistant", "answer to hello"),
        ("user", "and now?"),
    ]
    assert [row[0] for row in stored(database)] == ["user", "assistant", "user", "assistant"]
