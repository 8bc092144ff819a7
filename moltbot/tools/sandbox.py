"""Running `exec` commands under bubblewrap (Debian's `bubblewrap` package, /usr/bin/bwrap).

`tools.exec.sandbox`: `auto` uses bubblewrap when it is installed and runs commands directly
otherwise; `bwrap` requires it (a command fails with a clear error when it is missing); `off`
always runs directly.

Inside the sandbox:
- the whole file system is visible read-only, except the agent's workspace (writable), a fresh
  /tmp, /dev and /proc; the gateway's state directory (sessions, other workspaces,
  gateway.env), its config file and the gateway user's home directory are hidden behind empty
  directories (the workspace is mounted back even when it lies inside one of them);
- new namespaces for everything (`--unshare-all`): no network unless `tools.exec.network` is
  true, its own process ids (so killing the sandbox kills all it started), no IPC with the host;
- `--die-with-parent`: if the gateway dies, even by kill -9, the sandbox and its processes die.

What it does not do: limit CPU, memory or disk use, hide readable system files (/etc, /usr),
or stop a command from writing whatever it likes into the workspace.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from moltbot.config.model import ExecSandbox
from moltbot.tools.base import ToolError

BWRAP = Path("/usr/bin/bwrap")


def bwrap_available() -> bool:
    return BWRAP.is_file() and os.access(BWRAP, os.X_OK)


def use_sandbox(mode: ExecSandbox) -> bool:
    """Whether a command runs sandboxed; ToolError when `bwrap` is required but missing."""
    if mode == "off":
        return False
    if bwrap_available():
        return True
    if mode == "bwrap":
        raise ToolError(
            "tools.exec.sandbox is bwrap but /usr/bin/bwrap is not installed "
            "(apt-get install bubblewrap); the command was not run"
        )
    return False


@dataclass(frozen=True, slots=True)
class Sandbox:
    workspace: Path  # real path
    hidden: tuple[Path, ...]  # directories and files to hide (state dir, config, home)
    network: bool

    def wrap(self, argv: Sequence[str], cwd: Path) -> list[str]:
        """bwrap's command line running `argv` in `cwd` (inside the workspace)."""
        args = [str(BWRAP), "--die-with-parent", "--unshare-all"]
        if self.network:
            args.append("--share-net")
        args += ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
        # Outer directories first, so that inner ones stay hidden under them.
        hidden = sorted(self.hidden, key=lambda p: len(p.parts))
        for path in hidden:
            args += _hide(path)
        args += ["--bind", str(self.workspace), str(self.workspace)]
        # A workspace that contains a hidden path (the state dir under it) would show it again.
        for path in hidden:
            if path != self.workspace and path.is_relative_to(self.workspace):
                args += _hide(path)
        return [*args, "--chdir", str(cwd), "--", *argv]


def _hide(path: Path) -> list[str]:
    if path == Path("/") or not path.exists():
        return []
    real = str(Path(os.path.realpath(path)))
    if path.is_dir():
        return ["--tmpfs", real]
    return ["--ro-bind", "/dev/null", real]
