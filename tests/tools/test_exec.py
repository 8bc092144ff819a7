"""exec through the real server: security modes, approvals over a real WebSocket, process
groups, timeouts, the environment, the output cap, abort, and the bubblewrap sandbox."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from moltbot.client import Event, GatewayClient, GatewayError
from moltbot.config.model import ExecConfig
from moltbot.tools.sandbox import bwrap_available
from tests.conftest import TOKEN, Gateway
from tests.fake_tool_upstream import Call, Reply, ToolUpstream, in_order
from tests.gateway.ws.wsutil import Probe
from tests.tools.conftest import answer_text, chat, tool_config

WAIT = 10.0
FULL_EXEC = ExecConfig(security="full", ask="off", sandbox="off")
LS = os.path.realpath(shutil.which("ls") or "/bin/ls")


def run_exec(*commands: str | dict[str, Any]) -> Reply:
    calls = [Call("exec", c if isinstance(c, dict) else {"command": c}) for c in commands]
    return Reply(calls=tuple(calls))


async def exec_results(
    state_dir: Path, workspace: Path, start_gateway: Any, exec_config: ExecConfig, *commands: Any
) -> list[str]:
    async with ToolUpstream(in_order(run_exec(*commands))) as up:
        gateway = await start_gateway(
            tool_config(state_dir, up, workspace, exec_config=exec_config)
        )
        assert answer_text(await chat(gateway)) == "done"
    return up.requests[1].tool_results()


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):  # gone before, or while, it was read
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")  # a zombie is dead


async def poll(predicate: Callable[[], bool]) -> None:
    """Wait for a state of other processes or of files: nothing there to await."""
    async with asyncio.timeout(WAIT):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def wait_dead(pid: int) -> None:
    await poll(lambda: not alive(pid))


def written(path: Path) -> str:
    return path.read_text().strip() if path.exists() else ""


def real(path: Path) -> str:
    return os.path.realpath(path)


def running(marker: str) -> list[int]:
    """The live processes whose command line has `marker`."""
    found = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True)
    return [pid for pid in map(int, found.stdout.split()) if alive(pid)]


async def wait_file(path: Path) -> str:
    await poll(lambda: bool(written(path)))
    return written(path)


async def next_event(client: GatewayClient, name: str) -> Event:
    async with asyncio.timeout(WAIT):
        while True:
            event = await client.next_event()
            assert event is not None, f"connection closed: {client.closed}"
            if event.name == name:
                return event


async def operator(gateway: Gateway) -> GatewayClient:
    return await GatewayClient.connect(gateway.ws_url, token=TOKEN, client_id="test", mode="test")


# -- who decides ----------------------------------------------------------------------------


async def test_deny_mode_does_not_offer_exec(state_dir, workspace, start_gateway):
    async with ToolUpstream(in_order(run_exec("id"))) as up:
        config = tool_config(state_dir, up, workspace, exec_config=ExecConfig(security="deny"))
        gateway = await start_gateway(config)
        await chat(gateway)
    assert "exec" not in up.requests[0].tool_names()
    assert up.requests[1].tool_results()[0].startswith("error: there is no tool 'exec'")


async def test_allowlist_runs_listed_binaries_without_a_shell(state_dir, workspace, start_gateway):
    config = ExecConfig(security="allowlist", ask="off", allowlist=("echo",), sandbox="off")
    results = await exec_results(
        state_dir,
        workspace,
        start_gateway,
        config,
        "echo 'hello  world' $HOME",
        "echo hi | cat",
        "echo ok && id",
        "echo $(id)",
        "echo `id`",
        "echo hi > out.txt",
        "ls",
        "no-such-command-x",
    )
    ran, pipe, chain, substitution, backquote, redirect, unlisted, missing = results
    assert ran == "hello  world $HOME\n\n[exit code 0]"  # no shell: $HOME stays as it is
    assert pipe.startswith("error: the shell operator '|' is not allowed")
    assert chain.startswith("error: the shell operator '&&' is not allowed")
    assert substitution.startswith("error: command substitution is not allowed")
    assert backquote.startswith("error: command substitution is not allowed")
    assert redirect.startswith("error: the shell operator '>' is not allowed")
    assert unlisted == f"error: {LS} is not on tools.exec.allowlist; the command was not run"
    assert missing == "error: command not found: no-such-command-x"
    assert not (workspace / "out.txt").exists()


async def test_allowlist_matches_path_globs_and_resolved_paths(state_dir, workspace, start_gateway):
    config = ExecConfig(security="allowlist", ask="off", allowlist=(f"{Path(LS).parent}/l*",))
    results = await exec_results(
        state_dir, workspace, start_gateway, config, "ls", f"{Path(LS).parent}/../bin/ls -d ."
    )
    assert results == ["(no output)\n[exit code 0]", ".\n\n[exit code 0]"]


async def test_full_mode_runs_shell_lines_in_the_workspace(state_dir, workspace, start_gateway):
    (workspace / "sub").mkdir()
    results = await exec_results(
        state_dir,
        workspace,
        start_gateway,
        FULL_EXEC,
        "echo one; echo two >&2; exit 3",
        {"command": "pwd", "workdir": "sub"},
        {"command": "pwd", "workdir": "../"},
    )
    mixed, pwd, outside = results
    assert mixed == "one\ntwo\n\n[exit code 3]"
    assert pwd == f"{real(workspace / 'sub')}\n\n[exit code 0]"
    assert outside == "error: '../' is outside the workspace; only paths inside it are allowed"


async def test_the_environment_is_scrubbed(state_dir, workspace, start_gateway, monkeypatch):
    monkeypatch.setenv("MOLTBOT_GATEWAY_TOKEN", "gateway-secret")
    monkeypatch.setenv("CLAWDBOT_GATEWAY_PASSWORD", "old-secret")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    monkeypatch.setenv("MY_PROVIDER_KEY", "another-secret")
    monkeypatch.setenv("LD_LIBRARY_PATH", "/nonexistent")
    monkeypatch.setenv("LC_ALL", "C")
    (output,) = await exec_results(state_dir, workspace, start_gateway, FULL_EXEC, "env")
    names = {line.split("=", 1)[0] for line in output.splitlines() if "=" in line}
    assert "PATH" in names and "LC_ALL" in names
    for secret in ("gateway-secret", "old-secret", "sk-secret", "another-secret", "/nonexistent"):
        assert secret not in output


async def test_output_is_capped_head_and_tail(state_dir, workspace, start_gateway):
    config = ExecConfig(security="full", ask="off", sandbox="off", max_output_bytes=1000)
    command = "echo START; head -c 200000 /dev/zero | tr '\\0' x; echo; echo END"
    (output,) = await exec_results(state_dir, workspace, start_gateway, config, command)
    assert output.startswith("START\n") and output.endswith("END\n\n[exit code 0]")
    assert "bytes of output omitted" in output and len(output) < 1200


# -- process groups ---------------------------------------------------------------------------


async def test_a_timeout_kills_the_whole_process_tree(state_dir, workspace, start_gateway):
    command = {
        "command": "sleep 30 & echo $! > bg.pid; sh -c 'echo $$ > inner.pid; sleep 30'",
        "timeout": 1,
    }
    (output,) = await exec_results(state_dir, workspace, start_gateway, FULL_EXEC, command)
    assert output.endswith(
        "[timed out after 1 s: the command and everything it started were killed]"
    )
    for name in ("bg.pid", "inner.pid"):
        await wait_dead(int((workspace / name).read_text()))


async def test_background_processes_do_not_outlive_the_call(state_dir, workspace, start_gateway):
    (output,) = await exec_results(
        state_dir, workspace, start_gateway, FULL_EXEC, "sleep 30 & echo $! > bg.pid; echo left"
    )
    assert output == "left\n\n[exit code 0]"
    await wait_dead(int((workspace / "bg.pid").read_text()))


async def test_abort_kills_a_running_command(state_dir, workspace, start_gateway):
    script = in_order(run_exec("echo $$ > shell.pid; sleep 30 & echo $! > sleep.pid; wait"))
    async with ToolUpstream(script) as up:
        gateway = await start_gateway(tool_config(state_dir, up, workspace, exec_config=FULL_EXEC))
        client = await operator(gateway)
        try:
            started = await client.request(
                "chat.send", {"sessionKey": "main", "message": "run it", "idempotencyKey": "r1"}
            )
            assert started["status"] == "started"
            shell = int(await wait_file(workspace / "shell.pid"))
            sleeper = int(await wait_file(workspace / "sleep.pid"))
            aborted = await client.request("chat.abort", {"sessionKey": "main"})
            assert aborted["runIds"] == ["r1"]
            await wait_dead(shell)
            await wait_dead(sleeper)
        finally:
            await client.close()
        run = gateway.runtime.get_run("r1")
        assert run is not None
        await asyncio.wait_for(run.wait(), WAIT)
    assert run.status == "aborted"
    stored = await gateway.runtime.store.messages("agent:main:main")
    assert [(m.role, m.status) for m in stored] == [("user", "aborted"), ("assistant", "aborted")]
    assert [c.name for c in stored[1].message.tool_calls] == ["exec"]


# -- approvals ------------------------------------------------------------------------------


async def approval_run(
    state_dir: Path,
    workspace: Path,
    start_gateway: Any,
    config: ExecConfig,
    commands: tuple[str, ...],
    answer: Any,
) -> tuple[list[str], list[Event]]:
    """Start an HTTP run whose model calls exec with `commands`, let `answer(client, event)`
    deal with each approval request on a real WebSocket; the results and the events seen."""
    (workspace / "hello.txt").write_text("hi")
    replies = [run_exec(c) for c in commands]
    events: list[Event] = []
    async with ToolUpstream(in_order(*replies)) as up:
        gateway = await start_gateway(tool_config(state_dir, up, workspace, exec_config=config))
        client = await operator(gateway)
        try:
            reply = asyncio.create_task(chat(gateway))
            while not reply.done():
                waiting = asyncio.ensure_future(client.next_event())
                await asyncio.wait({waiting, reply}, timeout=WAIT, return_when="FIRST_COMPLETED")
                if not waiting.done():
                    waiting.cancel()
                    continue
                event = waiting.result()
                assert event is not None
                if event.name.startswith("exec.approval."):
                    events.append(event)
                if event.name == "exec.approval.requested":
                    await answer(client, event)
            assert answer_text(await reply) == "done"
            events += [e for e in client.queued_events() if e.name.startswith("exec.approval.")]
        finally:
            await client.close()
    return [r.tool_results()[0] for r in up.requests[1:]], events


async def test_an_approval_answered_over_the_websocket(state_dir, workspace, start_gateway):
    async def allow(client: GatewayClient, event: Event) -> None:
        pending = await client.request("exec.approval.list")
        assert [p["id"] for p in pending["approvals"]] == [event.payload["id"]]
        resolved = await client.request(
            "exec.approval.resolve", {"id": event.payload["id"], "decision": "allow-once"}
        )
        assert resolved == {"ok": True, "id": event.payload["id"], "decision": "allow-once"}

    config = ExecConfig(security="allowlist", ask="on-miss", sandbox="off")
    results, events = await approval_run(
        state_dir, workspace, start_gateway, config, ("ls",), allow
    )
    assert results == ["hello.txt\n\n[exit code 0]"]
    requested, resolved = events
    request = requested.payload["request"]
    assert request["command"] == "ls" and request["resolvedPath"] == LS
    assert request["cwd"] == real(workspace)
    assert request["reason"] == f"{LS} is not on the allowlist"
    assert request["agentId"] == "main" and request["runId"].startswith("chatcmpl-")
    assert requested.payload["expiresAtMs"] > requested.payload["createdAtMs"]
    assert resolved.payload["id"] == requested.payload["id"]
    assert resolved.payload["decision"] == "allow-once"
    assert resolved.payload["resolvedBy"].startswith("test (")


async def test_a_denied_command_is_not_run(state_dir, workspace, start_gateway):
    async def deny(client: GatewayClient, event: Event) -> None:
        await client.request(
            "exec.approval.resolve", {"id": event.payload["id"], "decision": "deny"}
        )

    config = ExecConfig(security="full", ask="always", sandbox="off")
    results, events = await approval_run(
        state_dir, workspace, start_gateway, config, ("touch denied.txt",), deny
    )
    assert results == ["error: an operator denied the command; it was not run"]
    assert [e.payload.get("decision") for e in events] == [None, "deny"]
    assert not (workspace / "denied.txt").exists()


async def test_no_answer_in_time_is_a_deny(state_dir, workspace, start_gateway):
    async def ignore(client: GatewayClient, event: Event) -> None:
        pass

    config = ExecConfig(security="full", ask="always", sandbox="off", approval_timeout_seconds=0.3)
    results, events = await approval_run(
        state_dir, workspace, start_gateway, config, ("touch late.txt",), ignore
    )
    assert results == ["error: no operator approved the command within 0.3 s; it was not run"]
    assert events[-1].payload["decision"] == "deny"
    assert events[-1].payload["resolvedBy"] == "timeout"
    assert not (workspace / "late.txt").exists()


async def test_allow_always_remembers_the_binary(state_dir, workspace, start_gateway):
    async def always(client: GatewayClient, event: Event) -> None:
        await client.request(
            "exec.approval.resolve", {"id": event.payload["id"], "decision": "allow-always"}
        )

    config = ExecConfig(security="allowlist", ask="on-miss", sandbox="off")
    results, events = await approval_run(
        state_dir, workspace, start_gateway, config, ("ls", "ls -a"), always
    )
    assert results == ["hello.txt\n\n[exit code 0]", ".\n..\nhello.txt\n\n[exit code 0]"]
    assert [e.name for e in events] == ["exec.approval.requested", "exec.approval.resolved"]


async def test_approvals_need_the_approvals_scope(state_dir, workspace, start_gateway):
    async with ToolUpstream(in_order()) as up:
        gateway = await start_gateway(tool_config(state_dir, up, workspace))
        client = await operator(gateway)
        try:
            with pytest.raises(GatewayError) as unknown:
                await client.request("exec.approval.resolve", {"id": "nope", "decision": "deny"})
            with pytest.raises(GatewayError) as bad:
                await client.request("exec.approval.resolve", {"id": "x", "decision": "maybe"})
        finally:
            await client.close()
        assert unknown.value.message == 'unknown or already resolved approval id "nope"'
        assert "decision" in bad.value.message
        async with aiohttp.ClientSession() as http:
            for scopes, allowed in (
                (["operator.read", "operator.write"], False),
                (["operator.approvals"], True),
            ):
                ws = await http.ws_connect(gateway.ws_url)
                probe = Probe(ws)
                assert (await probe.hello(scopes=scopes))["ok"]
                answer = await probe.request("exec.approval.list")
                await ws.close()
                assert answer["ok"] is allowed, answer
                if not allowed:
                    assert answer["error"]["message"] == "missing scope: operator.approvals"


# -- the sandbox ----------------------------------------------------------------------------


def _bwrap_works() -> bool:
    if not bwrap_available():
        return False
    probe = ["/usr/bin/bwrap", "--unshare-all", "--ro-bind", "/", "/", "--", "/bin/true"]
    return subprocess.run(probe, capture_output=True, timeout=10).returncode == 0


needs_bwrap = pytest.mark.skipif(
    not _bwrap_works(), reason="bubblewrap is not installed or cannot create namespaces here"
)


@pytest.fixture
def var_tmp() -> Iterator[Path]:
    """A directory outside /tmp (the sandbox has a /tmp of its own, which would hide the
    difference between "read-only" and "not there")."""
    path = Path(tempfile.mkdtemp(prefix="moltbot-test-", dir="/var/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@needs_bwrap
async def test_the_sandbox_keeps_writes_in_the_workspace_and_hides_state(var_tmp, start_gateway):
    state_dir = var_tmp / "state"
    workspace = state_dir / "workspace"  # inside the hidden state dir: mounted back
    workspace.mkdir(parents=True)
    (state_dir / "gateway.env").write_text("SECRET=1")
    outside = var_tmp / "outside.txt"
    command = (
        f"touch inside.txt && echo wrote-inside; touch {outside} 2>&1; "
        f"echo listing; ls -A {state_dir}; echo HOME=$HOME"
    )
    config = ExecConfig(security="full", ask="off", sandbox="bwrap")
    (output,) = await exec_results(state_dir, workspace, start_gateway, config, command)
    assert "wrote-inside" in output and "Read-only file system" in output
    assert output.split("listing\n")[1].startswith("workspace\nHOME=")  # nothing else shows
    assert f"HOME={real(workspace)}" in output
    assert (workspace / "inside.txt").exists() and not outside.exists()


@needs_bwrap
@pytest.mark.parametrize("network", [False, True])
async def test_the_sandbox_has_no_network_unless_allowed(
    network, state_dir, workspace, start_gateway
):
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    command = f"bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}' && echo connected || echo offline"
    config = ExecConfig(security="full", ask="off", sandbox="bwrap", network=network)
    try:
        (output,) = await exec_results(state_dir, workspace, start_gateway, config, command)
    finally:
        server.close()
    assert ("connected" if network else "offline") in output


@needs_bwrap
async def test_a_sandboxed_command_is_killed_at_its_timeout(state_dir, workspace, start_gateway):
    config = ExecConfig(security="full", ask="off", sandbox="bwrap")
    marker = "29.4817"  # a sleep no one else runs: the sandbox's pids are its own
    command = {"command": f"echo started; sleep {marker}", "timeout": 1}
    (output,) = await exec_results(state_dir, workspace, start_gateway, config, command)
    assert output.startswith("started\n") and "[timed out after 1 s" in output
    await poll(lambda: not running(f"sleep {marker}"))


async def test_sandbox_bwrap_without_bwrap_fails_closed(
    state_dir, workspace, start_gateway, monkeypatch
):
    monkeypatch.setattr("moltbot.tools.sandbox.BWRAP", Path("/nonexistent/bwrap"))
    config = ExecConfig(security="full", ask="off", sandbox="bwrap")
    (output,) = await exec_results(state_dir, workspace, start_gateway, config, "touch x")
    assert output.startswith("error: tools.exec.sandbox is bwrap but /usr/bin/bwrap is not")
    assert not (workspace / "x").exists()


async def test_approval_events_reach_only_sockets_that_may_answer(
    state_dir, workspace, start_gateway
):
    config = ExecConfig(security="full", ask="always", sandbox="off")
    async with ToolUpstream(in_order(run_exec("echo hi"))) as up:
        gateway = await start_gateway(tool_config(state_dir, up, workspace, exec_config=config))
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(gateway.ws_url)
            reader = Probe(ws)
            hello = await reader.hello(scopes=["operator.read", "operator.write"])
            assert "exec.approval.requested" in hello["payload"]["features"]["events"]
            approver = await operator(gateway)
            try:
                reply = asyncio.create_task(chat(gateway))
                event = await next_event(approver, "exec.approval.requested")
                await approver.request(
                    "exec.approval.resolve", {"id": event.payload["id"], "decision": "allow-once"}
                )
                assert answer_text(await reply) == "done"
                await reader.request("health")  # whatever was sent to it before has arrived
            finally:
                await approver.close()
                await ws.close()
    assert up.requests[1].tool_results() == ["hi\n\n[exit code 0]"]
    assert [e for e in reader.events if e.get("event", "").startswith("exec.approval.")] == []
