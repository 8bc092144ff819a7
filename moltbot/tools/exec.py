"""The `exec` tool: a command in the agent's workspace, under the operator's rules.

Who decides what runs (`tools.exec`):

- `security: deny`: nothing runs (the tool is not even offered to the model).
- `security: allowlist`: one command, split into words like a shell would (quotes work), whose
  binary, resolved on PATH to its real path, matches `tools.exec.allowlist` (absolute paths,
  path globs such as `/usr/bin/*`, or names looked up on PATH) or was allowed always. It runs
  without a shell: pipes, redirects, `;`, `&&`, `||`, `&`, subshells and backquotes are refused,
  and `$VAR` or `*` are passed as they are.
- `security: full`: any shell command line (`/bin/sh -c`).
- `ask: off` never asks (an allowlist miss is refused); `on-miss` asks an operator about an
  allowlist miss; `always` asks about every command. Asking goes through
  moltbot.tools.approvals; a deny, or no answer in time, refuses the command.

How it runs (moltbot.tools.process, moltbot.tools.sandbox): in the workspace (or `workdir`
inside it), in its own process group killed as a whole at the timeout, on abort and when the
command exits, with stdin closed, output capped, and an environment made from a short list of
harmless variables (PATH, HOME, LANG, LC_*, TERM, TZ, USER, LOGNAME, SHELL, TMPDIR): none of
the gateway's variables (MOLTBOT_*, provider keys, anything else it was given) and no LD_*
overrides reach the command.
"""

from __future__ import annotations

import os
import shlex
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from moltbot.config.model import ExecConfig
from moltbot.tools.approvals import ApprovalRequest
from moltbot.tools.base import Args, ToolContext, ToolError, ToolResult, schema
from moltbot.tools.process import Finished, run_process
from moltbot.tools.sandbox import Sandbox, use_sandbox
from moltbot.tools.workspace import Workspace

PASSED_VARIABLES = ("PATH", "HOME", "LANG", "LANGUAGE", "TERM", "TZ", "USER", "LOGNAME", "SHELL")
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
SHELL = "/bin/sh"
MAX_COMMAND_CHARS = 100_000
# Unquoted, these mean shell syntax the allowlist mode does not run.
_OPERATOR_CHARS = frozenset(";&|<>()")


@dataclass(frozen=True, slots=True)
class Plan:
    argv: tuple[str, ...]
    binary: str | None  # the resolved binary of a single command
    ask: str | None  # why an operator must approve it; None: it may run


class ExecTool:
    name = "exec"
    group = "runtime"
    parallel_safe = False
    description = (
        "Run a command in the workspace and return its output (stdout and stderr together) "
        "and exit code. workdir is relative to the workspace; timeout is in seconds."
    )

    def __init__(self, config: ExecConfig, hidden: tuple[Path, ...] = ()) -> None:
        self.config = config
        self._hidden = tuple(Path(os.path.realpath(p)) for p in hidden)
        self.parameters = schema(
            {
                "command": {"type": "string", "description": self._command_help()},
                "workdir": {"type": "string", "description": "directory in the workspace"},
                "timeout": {
                    "type": "number",
                    "description": f"seconds (default {config.timeout_seconds:g}, "
                    f"at most {config.max_timeout_seconds:g})",
                },
            },
            ("command",),
        )

    def _command_help(self) -> str:
        if self.config.security == "allowlist":
            return "one command with its arguments (no pipes, redirects or chaining)"
        return "a shell command line (/bin/sh -c)"

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        a = Args(self.name, args)
        command = a.string("command", required=True)
        if not command.strip():
            raise ToolError("command must not be empty")
        if len(command) > MAX_COMMAND_CHARS:
            raise ToolError(f"command is longer than {MAX_COMMAND_CHARS} characters")
        timeout = a.number("timeout", default=self.config.timeout_seconds) or 1.0
        timeout = min(timeout, self.config.max_timeout_seconds)
        workspace = Workspace(ctx.workspace)
        cwd = workspace.resolve(a.string("workdir", default=".") or ".")
        if not cwd.path.is_dir():
            raise ToolError(f"workdir {cwd.shown} is not a directory")
        sandboxed = use_sandbox(self.config.sandbox)
        env = command_env(os.environ, workspace.real_root() if sandboxed else None)
        plan = self.plan(command, cwd.path, env, ctx)
        if plan.ask is not None:
            await self._approve(command, plan, cwd.path, ctx)
        argv: list[str] = list(plan.argv)
        if sandboxed:
            sandbox = Sandbox(workspace.real_root(), self._hidden, self.config.network)
            argv = sandbox.wrap(argv, cwd.path)
        finished = await run_process(
            argv, cwd=cwd.path, env=env, timeout=timeout, max_bytes=self.config.max_output_bytes
        )
        return _result(command, finished, timeout)

    # -- deciding -----------------------------------------------------------------------------

    def plan(self, command: str, cwd: Path, env: Mapping[str, str], ctx: ToolContext) -> Plan:
        """What to run and whether to ask first; ToolError when it must not run at all."""
        config = self.config
        if config.security == "deny":
            raise ToolError("running commands is disabled (tools.exec.security is deny)")
        if config.security == "full":
            binary = single_binary(command, cwd, env)
            if config.ask == "always" and not (binary and ctx.approvals.allowed_always(binary)):
                return Plan((SHELL, "-c", command), binary, "tools.exec.ask is always")
            return Plan((SHELL, "-c", command), binary, None)
        words, syntax = split_command(command)
        if syntax is not None:
            raise ToolError(
                f"{syntax} is not allowed with tools.exec.security allowlist: run one command "
                "with its arguments (no pipes, redirects, chaining or subshells)"
            )
        binary = resolve_binary(words[0], cwd, env)
        if binary is None:
            raise ToolError(f"command not found: {words[0]}")
        argv = (binary, *words[1:])
        listed = self.on_allowlist(binary, cwd, env) or ctx.approvals.allowed_always(binary)
        if config.ask == "always":
            return Plan(argv, binary, "tools.exec.ask is always")
        if listed:
            return Plan(argv, binary, None)
        if config.ask == "on-miss":
            return Plan(argv, binary, f"{binary} is not on the allowlist")
        raise ToolError(f"{binary} is not on tools.exec.allowlist; the command was not run")

    def on_allowlist(self, binary: str, cwd: Path, env: Mapping[str, str]) -> bool:
        for entry in self.config.allowlist:
            if "/" not in entry:
                if resolve_binary(entry, cwd, env) == binary:
                    return True
            elif fnmatchcase(binary, entry) or os.path.realpath(entry) == binary:
                return True
        return False

    async def _approve(self, command: str, plan: Plan, cwd: Path, ctx: ToolContext) -> None:
        request = ApprovalRequest(
            command=command,
            cwd=str(cwd),
            agent_id=ctx.agent_id,
            session_key=ctx.session_key,
            run_id=ctx.run_id,
            security=self.config.security,
            ask=self.config.ask,
            reason=plan.ask or "",
            resolved_path=plan.binary,
        )
        resolution = await ctx.approvals.decide(request)
        if resolution.decision != "deny":
            return
        if resolution.by == "timeout":
            raise ToolError(
                f"no operator approved the command within {ctx.approvals.timeout_seconds:g} s; "
                "it was not run"
            )
        if resolution.by == "limit":
            raise ToolError("too many commands are waiting for approval; this one was not run")
        raise ToolError("an operator denied the command; it was not run")


def split_command(command: str) -> tuple[list[str], str | None]:
    """The command's words, and the shell syntax found in it (None: a single command)."""
    if "\n" in command or "\r" in command:
        return [], "a line break"
    if "`" in command or "$(" in command:
        return [], "command substitution"
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        words = list(lexer)
    except ValueError as exc:
        raise ToolError(f"cannot parse the command: {exc}") from None
    for word in words:
        if word and set(word) <= _OPERATOR_CHARS:
            return words, f"the shell operator {word!r}"
    if not words:
        raise ToolError("command must not be empty")
    return words, None


def single_binary(command: str, cwd: Path, env: Mapping[str, str]) -> str | None:
    """The binary of a command line that is one simple command (what allow-always can
    remember), else None. The shell, not us, decides what a full-mode line means."""
    try:
        words, syntax = split_command(command)
    except ToolError:
        return None
    return resolve_binary(words[0], cwd, env) if syntax is None else None


def resolve_binary(word: str, cwd: Path, env: Mapping[str, str]) -> str | None:
    """The real path of the executable `word` names (on PATH, or a path from `cwd`)."""
    if "/" in word:
        path = cwd / word
        found = str(path) if path.is_file() and os.access(path, os.X_OK) else None
    else:
        found = shutil.which(word, path=env.get("PATH", DEFAULT_PATH))
    return os.path.realpath(found) if found else None


def command_env(environ: Mapping[str, str], sandbox_home: Path | None) -> dict[str, str]:
    """The few variables a command gets. In the sandbox the real home is hidden: HOME is the
    workspace and /tmp is the sandbox's own."""
    env = {k: v for k, v in environ.items() if k in PASSED_VARIABLES or k.startswith("LC_")}
    env.setdefault("PATH", DEFAULT_PATH)
    if sandbox_home is not None:
        env["HOME"] = str(sandbox_home)
    elif "TMPDIR" in environ:
        env["TMPDIR"] = environ["TMPDIR"]
    return env


def _result(command: str, finished: Finished, timeout: float) -> ToolResult:
    output = finished.output or "(no output)"
    first = " ".join(command.split())[:80]
    if finished.timed_out:
        note = f"[timed out after {timeout:g} s: the command and everything it started were killed]"
        return ToolResult.of(False, f"{output}\n{note}", f"{first}: timed out after {timeout:g} s")
    code = finished.exit_code
    content = f"{output}\n[exit code {code}]"
    return ToolResult.of(code == 0, content, f"{first}: exit {code}")
