"""Paths confined to an agent's workspace.

A path from the model is taken relative to the workspace (an absolute one as it is), then
resolved with every symlink followed. If the result is not the workspace or below it, the path
is refused, never clamped to something else: `../x`, `/etc/passwd` and a symlink pointing out
all fail with the same clear error. Symlinks that stay inside are fine.

Between the check and the open a path could be swapped for a symlink (by a command the agent
runs, say). Files are therefore opened without following a final symlink, and the opened file's
real path (from /proc/self/fd) is checked again, so what is read or written is inside the
workspace even then.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

from moltbot.tools.base import ToolError

MAX_PATH_CHARS = 4096
_PROC_FD = Path("/proc/self/fd")


@dataclass(frozen=True, slots=True)
class Target:
    path: Path  # the real path, inside the workspace
    shown: str  # relative to the workspace, for messages ("." for the workspace itself)


class Workspace:
    def __init__(self, root: Path) -> None:
        self._root = root

    def real_root(self) -> Path:
        """The workspace's real path, created (private) on first use."""
        if not self._root.exists():
            self._root.mkdir(mode=0o700, parents=True, exist_ok=True)
        return Path(os.path.realpath(self._root))

    def resolve(self, path: str) -> Target:
        if not path or "\x00" in path or len(path) > MAX_PATH_CHARS:
            raise ToolError(f"not a usable path: {path[:200]!r}")
        root = self.real_root()
        real = Path(os.path.realpath(root / Path(path)))  # an absolute path replaces the root
        if not self.contains(root, real):
            raise ToolError(f"{path!r} is outside the workspace; only paths inside it are allowed")
        return Target(real, self.shown(root, real))

    @staticmethod
    def contains(root: Path, path: Path) -> bool:
        return path == root or path.is_relative_to(root)

    @staticmethod
    def shown(root: Path, path: Path) -> str:
        return path.relative_to(root).as_posix() or "."

    def open(self, target: Target, flags: int, mode: int = 0o666) -> int:
        """os.open of a resolved target, refusing a final symlink and anything that turns out
        to be outside the workspace once opened."""
        try:
            fd = os.open(target.path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
        except OSError as exc:
            raise ToolError(f"{target.shown}: {os_reason(exc)}") from None
        self.check_fd(fd, target.shown)
        return fd

    def check_fd(self, fd: int, shown: str) -> None:
        if not _PROC_FD.is_dir():
            return  # not Linux: the resolve check is all there is
        opened = Path(os.readlink(_PROC_FD / str(fd)))
        if not self.contains(self.real_root(), opened):
            os.close(fd)
            raise ToolError(f"{shown!r} is outside the workspace; only paths inside it are allowed")

    def make_parents(self, target: Target) -> None:
        """Create the missing directories above `target`, each checked to be inside."""
        root = self.real_root()
        missing = []
        parent = target.path.parent
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        for directory in reversed(missing):
            try:
                directory.mkdir()
            except FileExistsError:
                pass
            except OSError as exc:
                shown = self.shown(root, directory)
                raise ToolError(f"cannot create {shown}: {os_reason(exc)}") from None
            if not self.contains(root, Path(os.path.realpath(directory))):
                raise ToolError(f"{target.shown!r} is outside the workspace")


_REASONS = {
    errno.ELOOP: "is a symbolic link (not followed here)",
    errno.ENOENT: "no such file or directory",
    errno.EISDIR: "is a directory",
    errno.ENOTDIR: "a part of the path is not a directory",
    errno.EACCES: "permission denied",
}


def os_reason(exc: OSError) -> str:
    """An OSError as a short reason without the absolute path (the model sees workspace paths)."""
    if exc.errno in _REASONS:
        return _REASONS[exc.errno]
    return (os.strerror(exc.errno) if exc.errno else str(exc)).lower()
