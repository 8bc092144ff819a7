"""File tools confined to the agent's workspace: read, write, edit, ls, find.

Paths go through `Workspace` (moltbot.tools.workspace): anything that resolves outside the
workspace is refused. Every listing and every read has a cap, and says when it was cut. The
file work runs in a thread (`asyncio.to_thread`): a large directory or a slow disk must not
hold up the event loop. Writes go to a temporary file in the same directory that then replaces
the target, so a crash leaves the old file or the new one, never half of one.
"""

from __future__ import annotations

import asyncio
import difflib
import os
import re
import stat
import uuid
from collections.abc import Callable
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, TypeVar

from moltbot.tools.base import Args, ToolContext, ToolError, ToolResult, bounded, schema
from moltbot.tools.workspace import Target, Workspace, os_reason

READ_DEFAULT_LINES = 2000
READ_MAX_LINES = 20_000
READ_MAX_CHARS = 100_000
EDIT_MAX_BYTES = 5_000_000
WRITE_MAX_CHARS = 5_000_000
DIFF_MAX_CHARS = 20_000
LIST_MAX_ENTRIES = 1000
FIND_MAX_RESULTS = 1000
FIND_MAX_VISITED = 50_000
SNIFF_BYTES = 8192
LINE_PIECE_BYTES = 4 * READ_MAX_CHARS
SKIPPED_DIRS = frozenset({".git"})  # find does not descend into these

T = TypeVar("T")


class FileTool:
    group = "fs"
    parallel_safe = True

    def workspace(self, ctx: ToolContext) -> Workspace:
        return Workspace(ctx.workspace)


class ReadTool(FileTool):
    name = "read"
    description = (
        "Read a text file in the workspace. Paths are relative to the workspace. Long files "
        f"are cut at {READ_DEFAULT_LINES} lines or {READ_MAX_CHARS} characters; use offset "
        "(1-based line) and limit (lines) to read further."
    )
    parameters = schema(
        {
            "path": {"type": "string", "description": "file path, relative to the workspace"},
            "offset": {"type": "integer", "minimum": 1, "description": "first line (1-based)"},
            "limit": {"type": "integer", "minimum": 1, "description": "how many lines"},
        },
        ("path",),
    )

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        a = Args(self.name, args)
        path = a.string("path", required=True)
        offset = a.integer("offset", default=1, minimum=1) or 1
        limit = a.integer("limit", default=READ_DEFAULT_LINES, minimum=1, maximum=READ_MAX_LINES)
        workspace = self.workspace(ctx)
        target = workspace.resolve(path)
        return await in_thread(target, _read, workspace, target, offset, limit or 1)


def _read(workspace: Workspace, target: Target, offset: int, limit: int) -> ToolResult:
    fd = _open_file(workspace, target, "; use ls to list it")
    with os.fdopen(fd, "rb") as raw:
        info = os.fstat(raw.fileno())
        if b"\x00" in raw.read(SNIFF_BYTES):
            size = info.st_size
            raise ToolError(f"{target.shown} is a binary file ({size} bytes); read shows text")
        raw.seek(0)
        lines: list[str] = []
        chars, more, number = 0, False, 0
        # readline with a size: a file with no newlines is read in pieces, not all at once.
        while line := raw.readline(LINE_PIECE_BYTES):
            number += 1
            if number < offset:
                continue
            if len(lines) == limit or chars >= READ_MAX_CHARS:
                more = True
                break
            text = line.decode("utf-8", "replace")
            if chars + len(text) > READ_MAX_CHARS:
                text = text[: READ_MAX_CHARS - chars] + "\n"
                more = True
            lines.append(text)
            chars += len(text)
    if not lines and number < offset and offset > 1:
        raise ToolError(f"offset {offset} is past the end of {target.shown} ({number} lines)")
    content = "".join(lines)
    last = offset + len(lines) - 1
    if more:
        content += (
            f"\n[truncated: showing lines {offset}-{last} of {target.shown}; "
            f"continue with offset={last + 1}]"
        )
    return ToolResult.success(content, f"read {target.shown} (lines {offset}-{last})")


def _open_file(workspace: Workspace, target: Target, hint: str = "") -> int:
    """A regular file opened for reading (a directory is refused before anything is read)."""
    fd = workspace.open(target, os.O_RDONLY)
    if stat.S_ISDIR(os.fstat(fd).st_mode):
        os.close(fd)
        raise ToolError(f"{target.shown} is a directory{hint}")
    return fd


async def in_thread(target: Target, work: Callable[..., T], *args: Any) -> T:
    """Blocking file work off the event loop; an OSError is a failure the model reads."""
    try:
        return await asyncio.to_thread(work, *args)
    except OSError as exc:
        raise ToolError(f"{target.shown}: {os_reason(exc)}") from None


class WriteTool(FileTool):
    name = "write"
    parallel_safe = False
    description = (
        "Create or overwrite a file in the workspace with the given content; missing parent "
        "directories are created."
    )
    parameters = schema(
        {
            "path": {"type": "string", "description": "file path, relative to the workspace"},
            "content": {"type": "string", "description": "the whole new content"},
        },
        ("path", "content"),
    )

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        a = Args(self.name, args)
        path = a.string("path", required=True)
        content = a.string("content", required=True)
        if len(content) > WRITE_MAX_CHARS:
            raise ToolError(f"content is longer than {WRITE_MAX_CHARS} characters")
        workspace = self.workspace(ctx)
        target = workspace.resolve(path)
        data = content.encode("utf-8", "surrogatepass")
        await in_thread(target, _write, workspace, target, data, True)
        return ToolResult.success(f"Wrote {len(data)} bytes to {target.shown}.")


def _write(workspace: Workspace, target: Target, data: bytes, create_parents: bool) -> None:
    """Replace the target's content through a temporary file beside it (keeping its mode)."""
    if create_parents:
        workspace.make_parents(target)
    if target.path.is_dir():
        raise ToolError(f"{target.shown} is a directory")
    mode = stat.S_IMODE(target.path.stat().st_mode) if target.path.exists() else None
    name = f".{target.path.name}.{uuid.uuid4().hex[:12]}.tmp"
    temporary = Target(target.path.with_name(name), target.shown)
    fd = workspace.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            if mode is not None:
                os.fchmod(out.fileno(), mode)
        os.replace(temporary.path, target.path)
    except OSError as exc:
        temporary.path.unlink(missing_ok=True)
        raise ToolError(f"cannot write {target.shown}: {os_reason(exc)}") from None


class EditTool(FileTool):
    name = "edit"
    parallel_safe = False
    description = (
        "Replace one exact piece of text in a workspace file. oldText must occur exactly once "
        "(include surrounding lines to make it unique); the file's line endings are kept. "
        "Returns a unified diff of the change."
    )
    parameters = schema(
        {
            "path": {"type": "string", "description": "file path, relative to the workspace"},
            "oldText": {"type": "string", "description": "the exact text to replace"},
            "newText": {"type": "string", "description": "what to put in its place"},
        },
        ("path", "oldText", "newText"),
    )

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        a = Args(self.name, args)
        path = a.string("path", required=True)
        old = a.string("oldText", required=True)
        new = a.string("newText", required=True)
        if not old:
            raise ToolError("oldText must not be empty")
        workspace = self.workspace(ctx)
        target = workspace.resolve(path)
        return await in_thread(target, _edit, workspace, target, old, new)


def _edit(workspace: Workspace, target: Target, old: str, new: str) -> ToolResult:
    fd = _open_file(workspace, target)
    with os.fdopen(fd, "rb") as raw:
        data = raw.read(EDIT_MAX_BYTES + 1)
    if len(data) > EDIT_MAX_BYTES:
        raise ToolError(f"{target.shown} is larger than {EDIT_MAX_BYTES} bytes; edit takes less")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ToolError(f"{target.shown} is not UTF-8 text; edit would damage it") from None
    old, new = _with_line_endings(text, old), _with_line_endings(text, new)
    first = text.find(old)
    if first < 0:
        raise ToolError(f"oldText was not found in {target.shown} (it must match exactly)")
    if text.find(old, first + 1) >= 0:
        count = text.count(old)
        raise ToolError(
            f"oldText occurs {max(count, 2)} times in {target.shown}; include more of the "
            "surrounding text so that it occurs once"
        )
    edited = text[:first] + new + text[first + len(old) :]
    _write(workspace, target, edited.encode("utf-8"), False)
    diff = "".join(
        difflib.unified_diff(
            text.splitlines(keepends=True),
            edited.splitlines(keepends=True),
            fromfile=f"a/{target.shown}",
            tofile=f"b/{target.shown}",
        )
    )
    added = sum(1 for line in diff.splitlines() if line.startswith("+") and line[:3] != "+++")
    removed = sum(1 for line in diff.splitlines() if line.startswith("-") and line[:3] != "---")
    content = f"Edited {target.shown}.\n{bounded(diff, DIFF_MAX_CHARS)}"
    return ToolResult.success(content, f"edited {target.shown} (+{added} -{removed})")


def _with_line_endings(text: str, piece: str) -> str:
    """`piece` with the file's line endings: models write \\n, a CRLF file keeps \\r\\n."""
    if "\r\n" not in text:
        return piece
    return piece.replace("\r\n", "\n").replace("\n", "\r\n")


class LsTool(FileTool):
    name = "ls"
    description = (
        "List a directory of the workspace (default: its top). Directories end in '/', "
        f"symbolic links in '@'. At most {LIST_MAX_ENTRIES} entries."
    )
    parameters = schema(
        {"path": {"type": "string", "description": "directory, relative to the workspace"}}
    )

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        path = Args(self.name, args).string("path", default=".") or "."
        workspace = self.workspace(ctx)
        target = workspace.resolve(path)
        return await in_thread(target, _list, target)


def _list(target: Target) -> ToolResult:
    try:
        with os.scandir(target.path) as entries:
            names = []
            for count, entry in enumerate(entries):
                if count == LIST_MAX_ENTRIES * 10:
                    break  # a huge directory: what has been read is enough to show
                names.append(entry.name + _kind_mark(entry))
    except OSError as exc:
        raise ToolError(f"{target.shown}: {os_reason(exc)}") from None
    names.sort()
    shown = names[:LIST_MAX_ENTRIES]
    content = "\n".join(shown) if shown else "(empty directory)"
    if len(names) > LIST_MAX_ENTRIES:
        content += f"\n[truncated: {LIST_MAX_ENTRIES} entries shown, more exist]"
    return ToolResult.success(content, f"ls {target.shown}: {len(names)} entries")


def _kind_mark(entry: os.DirEntry[str]) -> str:
    if entry.is_symlink():
        return "@"
    return "/" if entry.is_dir() else ""


class FindTool(FileTool):
    name = "find"
    description = (
        "Find files and directories in the workspace by glob pattern. A pattern without '/' "
        "matches names at any depth ('*.py'); one with '/' matches the path from the search "
        f"directory ('src/*/test_*.py', '**/' matches any depth). At most {FIND_MAX_RESULTS} "
        "results; .git is skipped; symbolic links to directories are not followed."
    )
    parameters = schema(
        {
            "pattern": {"type": "string", "description": "glob pattern"},
            "path": {"type": "string", "description": "where to search (default: everywhere)"},
        },
        ("pattern",),
    )

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        a = Args(self.name, args)
        pattern = a.string("pattern", required=True)
        if not pattern:
            raise ToolError("pattern must not be empty")
        workspace = self.workspace(ctx)
        target = workspace.resolve(a.string("path", default=".") or ".")
        root = workspace.real_root()
        return await in_thread(target, _find, root, target, pattern)


def _find(root: Path, base: Target, pattern: str) -> ToolResult:
    if not base.path.is_dir():
        raise ToolError(f"{base.shown} is not a directory")
    matches = _matcher(pattern)
    found: list[str] = []
    visited = 0
    complete = True
    for directory, dirs, files in os.walk(base.path):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
        here = Path(directory)
        for name, is_dir in [(d, True) for d in dirs] + [(f, False) for f in sorted(files)]:
            visited += 1
            if matches(name, (here / name).relative_to(base.path).as_posix()):
                found.append(Workspace.shown(root, here / name) + ("/" if is_dir else ""))
            if len(found) >= FIND_MAX_RESULTS or visited >= FIND_MAX_VISITED:
                complete = False
                break
        if not complete:
            break
    content = "\n".join(found) if found else f"no matches for {pattern!r} in {base.shown}"
    if not complete:
        content += (
            f"\n[truncated: stopped after {len(found)} results and {visited} entries; "
            "narrow the pattern or the path]"
        )
    return ToolResult.success(content, f"find {pattern!r}: {len(found)} results")


def _matcher(pattern: str) -> Callable[[str, str], bool]:
    """(name, relative path) -> whether it matches: a pattern without '/' tests the name, one
    with '/' the path, where '*' and '?' stay within one path segment and '**/' spans any."""
    if "/" not in pattern:
        return lambda name, relative: fnmatchcase(name, pattern)
    regex = re.compile(_glob_regex(pattern))
    return lambda name, relative: regex.fullmatch(relative) is not None


def _glob_regex(pattern: str) -> str:
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and (end := pattern.find("]", i + 2)) > 0:
            inside = pattern[i + 1 : end]
            inside = "^" + inside[1:] if inside.startswith("!") else inside
            out.append("[" + inside.replace("\\", "\\\\") + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)


FILE_TOOLS = (ReadTool(), WriteTool(), EditTool(), LsTool(), FindTool())
