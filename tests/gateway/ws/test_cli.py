"""`moltbot agent` and `moltbot health` as real subprocesses against a real gateway."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from pathlib import Path

import pytest

from tests.conftest import TOKEN, make_config
from tests.fake_upstreams import FakeOpenAI, provider_config

ROOT = Path(__file__).resolve().parents[3]
CLI_WAIT = 30.0  # a fresh interpreter importing aiohttp can be slow on a loaded machine


def cli_env(tmp_path: Path) -> dict[str, str]:
    """No user config, no inherited gateway secrets."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MOLTBOT_", "CLAWDBOT_"))}
    env.update(HOME=str(tmp_path), MOLTBOT_STATE_DIR=str(tmp_path / "cli-state"))
    env["PYTHONPATH"] = str(ROOT)
    return env


async def spawn(tmp_path: Path, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "moltbot",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=cli_env(tmp_path),
        cwd=ROOT,
    )


async def run_cli(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    process = await spawn(tmp_path, *args)
    async with asyncio.timeout(CLI_WAIT):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_agent_prints_the_reply_and_exits_0(tmp_path, state_dir, start_ws):
    gateway = await start_ws(make_config(state_dir))
    code, out, err = await run_cli(
        tmp_path, "agent", "--url", gateway.ws_url, "--token", TOKEN, "--message", "hello from cli"
    )
    assert (code, err) == (0, "")
    assert out.startswith("[") and out.endswith("] hello from cli\n")  # the echo model
    history = await gateway.runtime.store.messages("agent:main:main")
    assert history[-1].content == out.rstrip("\n")


async def test_agent_streams_while_the_run_is_going(tmp_path, state_dir, start_ws):
    async with FakeOpenAI(reply="one two three") as up:
        up.hang(after_chunks=2)  # two words, then nothing until the run is stopped
        config = make_config(state_dir, providers=(provider_config(up),), primary="up/m1")
        await streams_then_stops(tmp_path, await start_ws(config))


async def streams_then_stops(tmp_path: Path, gateway) -> None:
    process = await spawn(
        tmp_path, "agent", "--url", gateway.ws_url, "--token", TOKEN, "-m", "one two"
    )
    assert process.stdout is not None and process.stderr is not None
    async with asyncio.timeout(CLI_WAIT):
        shown = b""
        while b"two" not in shown:
            chunk = await process.stdout.read(64)
            assert chunk, "the CLI ended before printing the reply"
            shown += chunk
        assert process.returncode is None  # printed while the run is still going
        (run,) = gateway.runtime.active_runs()
        run.abort("test")
        rest, err = await process.communicate()
    assert (shown + rest).decode() == "one two\n"
    assert process.returncode == 1
    assert err.decode() == "moltbot: agent run aborted (test)\n"


async def test_agent_with_a_wrong_token_fails_on_one_line(tmp_path, state_dir, start_ws):
    gateway = await start_ws(make_config(state_dir))
    code, out, err = await run_cli(
        tmp_path, "agent", "--url", gateway.ws_url, "--token", "wrong", "--message", "hi"
    )
    assert code == 2 and out == ""
    assert err.count("\n") == 1
    assert err.startswith("moltbot: gateway refused the connection: unauthorized: gateway token")


async def test_agent_without_a_gateway_fails_on_one_line(tmp_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, out, err = await run_cli(
        tmp_path, "agent", "--url", f"ws://127.0.0.1:{port}", "--token", TOKEN, "-m", "hi"
    )
    assert code == 2 and out == ""
    assert err == f"moltbot: cannot connect to ws://127.0.0.1:{port}: connection refused " + (
        "(is the gateway running?)\n"
    )


@pytest.mark.parametrize("bind", ["loopback", "lan"])  # lan: listens on 0.0.0.0, dial 127.0.0.1
async def test_health_prints_json_using_the_config_defaults(tmp_path, state_dir, start_ws, bind):
    gateway = await start_ws(make_config(state_dir))
    port = int(gateway.url.rsplit(":", 1)[1])
    config_file = tmp_path / "moltbot.json"
    config = {"gateway": {"port": port, "bind": bind, "auth": {"token": TOKEN}}}
    config_file.write_text(json.dumps(config))
    code, out, err = await run_cli(tmp_path, "health", "--config", str(config_file))
    assert (code, err) == (0, "")
    health = json.loads(out)
    assert health["ok"] is True and health["defaultAgentId"] == "main"
