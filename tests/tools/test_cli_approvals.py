"""`moltbot agent` answering its run's exec approvals: by flag, and on a real terminal (pty)."""

from __future__ import annotations

import asyncio
import os
import sys

from moltbot.config.model import ExecConfig
from tests.conftest import TOKEN
from tests.fake_tool_upstream import Call, Reply, ToolUpstream, in_order
from tests.gateway.ws.test_cli import CLI_WAIT, ROOT, cli_env, run_cli
from tests.tools.conftest import tool_config

ASK_ALWAYS = ExecConfig(security="allowlist", ask="always", sandbox="off")


def exec_reply(command: str) -> Reply:
    return Reply(calls=(Call("exec", {"command": command}),))


async def test_approve_flag_allows_the_runs_commands(tmp_path, state_dir, workspace, start_gateway):
    async with ToolUpstream(in_order(exec_reply("echo approved-run"))) as up:
        gateway = await start_gateway(tool_config(state_dir, up, workspace, exec_config=ASK_ALWAYS))
        code, out, err = await run_cli(
            tmp_path, "agent", "--url", gateway.ws_url, "--token", TOKEN, "-m", "go", "--approve"
        )
    assert (code, out) == (0, "done\n"), err
    assert "moltbot: approving: echo approved-run" in err
    assert up.requests[1].tool_results() == ["approved-run\n\n[exit code 0]"]


async def test_deny_flag_denies_them(tmp_path, state_dir, workspace, start_gateway):
    async with ToolUpstream(in_order(exec_reply("echo never"))) as up:
        gateway = await start_gateway(tool_config(state_dir, up, workspace, exec_config=ASK_ALWAYS))
        code, out, err = await run_cli(
            tmp_path, "agent", "--url", gateway.ws_url, "--token", TOKEN, "-m", "go", "--deny"
        )
    assert (code, out) == (0, "done\n"), err
    assert "moltbot: denying: echo never" in err
    assert up.requests[1].tool_results() == [
        "error: an operator denied the command; it was not run"
    ]


async def test_a_terminal_is_asked(tmp_path, state_dir, workspace, start_gateway):
    config = ExecConfig(security="allowlist", ask="on-miss", sandbox="off")
    script = in_order(exec_reply("echo first"), exec_reply("echo second"))
    async with ToolUpstream(script) as up:
        gateway = await start_gateway(tool_config(state_dir, up, workspace, exec_config=config))
        master, slave = os.openpty()
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "moltbot", "agent", "--url", gateway.ws_url,
                "--token", TOKEN, "-m", "go",
                stdin=slave, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                env=cli_env(tmp_path), cwd=ROOT,
            )  # fmt: skip
            assert process.stderr is not None
            async with asyncio.timeout(CLI_WAIT):
                asked = await read_until(process.stderr, b"Allow? [o]nce, [a]lways, [d]eny: ")
                assert b"echo first" in asked
                os.write(master, b"a\n")  # always: the second echo is not asked about
                out, err = await process.communicate()
        finally:
            os.close(master)
            os.close(slave)
    assert process.returncode == 0, err
    assert out == b"done\n"
    assert err.count(b"Allow?") == 0  # asked once, before
    assert [r.tool_results() for r in up.requests[1:]] == [
        ["first\n\n[exit code 0]"],
        ["second\n\n[exit code 0]"],
    ]


async def read_until(stream: asyncio.StreamReader, marker: bytes) -> bytes:
    seen = b""
    while marker not in seen:
        chunk = await stream.read(256)
        assert chunk, f"the CLI ended before asking: {seen!r}"
        seen += chunk
    return seen
