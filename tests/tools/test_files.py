"""read, write, edit, ls and find through the real server, in a temporary workspace."""

from __future__ import annotations

import os

from moltbot.config.model import ToolRules
from tests.fake_tool_upstream import Call, Reply, ToolUpstream, in_order
from tests.tools.conftest import answer_text, chat, tool_config

SESSION = "agent:main:files"


async def test_write_edit_read_round_trip_is_stored_in_order(state_dir, workspace, start_gateway):
    script = in_order(
        Reply(calls=(Call("write", {"path": "notes/today.txt", "content": "alpha\nbeta\n"}),)),
        Reply(
            calls=(
                Call("edit", {"path": "notes/today.txt", "oldText": "beta", "newText": "gamma"}),
            )
        ),
        Reply(calls=(Call("read", {"path": "notes/today.txt"}),)),
        then="all done",
    )
    async with ToolUpstream(script) as up:
        gateway = await start_gateway(tool_config(state_dir, up, workspace))
        answer = await chat(gateway, "keep notes", session=SESSION)
    assert answer_text(answer) == "all done"
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert (workspace / "notes" / "today.txt").read_text() == "alpha\ngamma\n"
    wrote, diff, read = (r.tool_results()[0] for r in up.requests[1:4])
    assert wrote == "Wrote 11 bytes to notes/today.txt."
    assert "--- a/notes/today.txt" in diff and "-beta\n+gamma" in diff
    assert read == "alpha\ngamma\n"
    stored = await gateway.runtime.store.messages(SESSION)
    roles = [(m.role, [c.name for c in m.message.tool_calls]) for m in stored]
    assert roles == [
        ("user", []),
        ("assistant", ["write"]),
        ("tool", []),
        ("assistant", ["edit"]),
        ("tool", []),
        ("assistant", ["read"]),
        ("tool", []),
        ("assistant", []),
    ]
    assert stored[-1].content == "all done" and stored[-1].model == "up/m1"
    calls = [c.id for m in stored for c in m.message.tool_calls]
    assert [m.message.tool_call_id for m in stored if m.role == "tool"] == calls


async def test_the_next_turn_sends_the_stored_tool_rounds_back(state_dir, workspace, start_gateway):
    script = in_order(Reply(calls=(Call("ls", {}),)), then="listed")
    async with ToolUpstream(script) as up:
        gateway = await start_gateway(tool_config(state_dir, up, workspace))
        await chat(gateway, "what is there?", session=SESSION)
        await chat(gateway, "and now?", session=SESSION)
    roles = [m["role"] for m in up.requests[2].messages]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "user"]


async def test_edit_keeps_crlf_line_endings(state_dir, workspace, start_gateway):
    (workspace / "dos.txt").write_bytes(b"one\r\ntwo\r\nthree\r\n")
    edit = {"path": "dos.txt", "oldText": "two\nthree", "newText": "2\n3\n3.5"}
    async with ToolUpstream(in_order(Reply(calls=(Call("edit", edit),)))) as up:
        gateway = await start_gateway(tool_config(state_dir, up, workspace))
        await chat(gateway)
    assert (workspace / "dos.txt").read_bytes() == b"one\r\n2\r\n3\r\n3.5\r\n"
    assert up.requests[1].tool_results()[0].startswith("Edited dos.txt.")


async def test_edit_refuses_missing_and_repeated_text(state_dir, workspace, start_gateway):
    (workspace / "a.txt").write_text("x = 1\nx = 1\n")
    script = in_order(
        Reply(calls=(Call("edit", {"path": "a.txt", "oldText": "x = 1", "newText": "y"}),)),
        Reply(calls=(Call("edit", {"path": "a.txt", "oldText": "zzz", "newText": "y"}),)),
        Reply(calls=(Call("edit", {"path": "nope.txt", "oldText": "a", "newText": "b"}),)),
    )
    async with ToolUpstream(script) as up:
        gateway = await start_gateway(tool_config(state_dir, up, workspace))
        answer = await chat(gateway)
    assert answer_text(answer) == "done"  # errors go to the model, the run is fine
    repeated, missing, no_file = (r.tool_results()[0] for r in up.requests[1:4])
    assert repeated.startswith("error: oldText occurs 2 times in a.txt")
    assert missing.startswith("error: oldText was not found in a.txt")
    assert no_file == "error: nope.txt: no such file or directory"
    assert (workspace / "a.txt").read_text() == "x = 1\nx = 1\n"


async def test_every_escape_from_the_workspace_is_refused(
    tmp_path, state_dir, workspace, start_gateway
):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("top secret")
    (workspace / "out").symlink_to(outside)  # a directory link pointing out
    (workspace / "secret-link").symlink_to(outside / "secret.txt")  # a file link pointing out
    (workspace / "inside.txt").write_text("fine")
    (workspace / "ok-link").symlink_to(workspace / "inside.txt")  # stays inside: allowed
    escapes = [
        "../outside/secret.txt",
        "sub/../../outside/secret.txt",
        str(outside / "secret.txt"),
        "/etc/passwd",
        "out/secret.txt",
        "secret-link",
    ]
    calls = [Call("read", {"path": p}) for p in escapes]
    calls += [Call("write", {"path": p, "content": "pwned"}) for p in escapes[:-1]]
    calls += [Call("write", {"path": "out/new.txt", "content": "pwned"})]
    calls += [Call("edit", {"path": "secret-link", "oldText": "top", "newText": "no"})]
    calls += [Call("ls", {"path": ".."}), Call("find", {"pattern": "*", "path": "out"})]
    calls += [Call("read", {"path": "ok-link"})]
    async with ToolUpstream(in_order(Reply(calls=tuple(calls)))) as up:
        gateway = await start_gateway(tool_config(state_dir, up, workspace))
        await chat(gateway)
    *refused, allowed = up.requests[1].tool_results()
    assert len(refused) == len(calls) - 1
    for result in refused:
        assert result.startswith("error: ") and "is outside the workspace" in result, result
    assert allowed == "fine"
    assert (outside / "secret.txt").read_text() == "top secret"
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert not (tmp_path / "outside" / "new.txt").exists()


async def test_a_symlink_swapped_in_after_the_check_is_not_followed(workspace, tmp_path):
    """The open refuses a final symlink even if the path resolved inside a moment before."""
    from moltbot.tools.base import ToolError
    from moltbot.tools.workspace import Target, Workspace

    space = Workspace(workspace)
    (tmp_path / "elsewhere.txt").write_text("outside")
    target = space.resolve("later.txt")  # does not exist yet: resolves inside
    (workspace / "later.txt").symlink_to(tmp_path / "elsewhere.txt")
    try:
        space.open(Target(target.path, target.shown), os.O_RDONLY)
    except ToolError as exc:
        assert "symbolic link" in str(exc)
    else:
        raise AssertionError("the swapped-in symlink was followed")


async def test_read_cuts_long_files_and_says_how_to_go_on(state_dir, workspace, start_gateway):
    (workspace / "long.txt").write_text("".join(f"line {i}\n" for i in range(1, 3001)))
    (workspace / "blob.bin").write_bytes(b"\x00\x01\x02" * 100)
    script = in_order(
        Reply(calls=(Call("read", {"path": "long.txt"}),)),
        Reply(calls=(Call("read", {"path": "long.txt", "offset": 2999, "limit": 5}),)),
        Reply(calls=(Call("read", {"path": "blob.bin"}), Call("read", {"path": "."}))),
    )
    async with ToolUpstream(script) as up:
        gateway = await start_gateway(tool_config(state_dir, up, workspace))
        await chat(gateway)
    first = up.requests[1].tool_results()[0]
    assert first.startswith("line 1\n") and "line 2000\n" in first and "line 2001" not in first
    assert first.endswith(
        "[truncated: showing lines 1-2000 of long.txt; continue with offset=2001]"
    )
    assert up.requests[2].tool_results()[0] == "line 2999\nline 3000\n"
    binary, directory = up.requests[3].tool_results()
    assert binary == "error: blob.bin is a binary file (300 bytes); read shows text"
    assert directory == "error: . is a directory; use ls to list it"


async def test_ls_and_find(state_dir, workspace, start_gateway):
    (workspace / "src" / "pkg").mkdir(parents=True)
    (workspace / "src" / "pkg" / "mod.py").write_text("")
    (workspace / "src" / "main.py").write_text("")
    (workspace / "README.md").write_text("")
    (workspace / ".git").mkdir()
    (workspace / ".git" / "hook.py").write_text("")
    script = in_order(
        Reply(
            calls=(
                Call("ls", {}),
                Call("ls", {"path": "src"}),
                Call("find", {"pattern": "*.py"}),
                Call("find", {"pattern": "src/*.py"}),
                Call("find", {"pattern": "**/*.md"}),
            )
        )
    )
    async with ToolUpstream(script) as up:
        gateway = await start_gateway(tool_config(state_dir, up, workspace))
        await chat(gateway)
    top, src, py, src_py, md = up.requests[1].tool_results()
    assert top.splitlines() == [".git/", "README.md", "src/"]
    assert src.splitlines() == ["main.py", "pkg/"]
    assert py.splitlines() == ["src/main.py", "src/pkg/mod.py"]  # .git is skipped
    assert src_py.splitlines() == ["src/main.py"]
    assert md.splitlines() == ["README.md"]


async def test_default_config_offers_file_tools_only(state_dir, workspace, start_gateway):
    script = in_order(Reply(calls=(Call("exec", {"command": "id"}),)))
    async with ToolUpstream(script) as up:
        config = tool_config(state_dir, up, workspace, rules=ToolRules())
        gateway = await start_gateway(config)
        await chat(gateway)
    assert up.requests[0].tool_names() == ["read", "write", "edit", "ls", "find"]
    assert up.requests[1].tool_results() == [
        "error: there is no tool 'exec' available to this agent "
        "(available: read, write, edit, ls, find)"
    ]


async def test_a_fresh_workspace_is_created_private(state_dir, tmp_path, start_gateway):
    workspace = tmp_path / "new" / "space"
    script = in_order(Reply(calls=(Call("write", {"path": "a.txt", "content": "x"}),)))
    async with ToolUpstream(script) as up:
        gateway = await start_gateway(tool_config(state_dir, up, workspace))
        await chat(gateway)
    assert (workspace / "a.txt").read_text() == "x"
    assert workspace.stat().st_mode & 0o777 == 0o700
