"""What the model is told: the system prompt and message timestamps."""

from __future__ import annotations

import asyncio
import functools
import platform
import re
import socket
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from moltbot.agents.directory import Agent

# Workspace files injected as project context, in this order, when present.
BOOTSTRAP_FILES = ("AGENTS.md", "SOUL.md", "TOOLS.md", "IDENTITY.md", "USER.md")
# How long a read of the workspace files is reused: edits show up within this many seconds,
# and a busy gateway does not re-read five files for every request.
WORKSPACE_CACHE_SECONDS = 2.0


_ENVELOPE = re.compile(r"^\[[^\]]*\d{4}-\d{2}-\d{2} \d{2}:\d{2}")


def resolve_timezone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name) if name else _host_zone()
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _host_zone() -> ZoneInfo:
    local = datetime.now().astimezone().tzinfo
    key = getattr(local, "key", None)
    return ZoneInfo(key) if key else ZoneInfo("UTC")


def format_timestamp(now: datetime) -> str:
    """`Sat 2026-01-31 19:55 CET`: the reference's message envelope time."""
    return now.strftime("%a %Y-%m-%d %H:%M ") + (now.tzname() or "UTC")


def with_timestamp_prefix(message: str, zone: ZoneInfo, now: datetime | None = None) -> str:
    """Prefix `[<time>] ` unless the message is blank or already carries a time."""
    if not message.strip() or _ENVELOPE.match(message) or "Current time: " in message:
        return message
    return f"[{format_timestamp(now or datetime.now(zone))}] {message}"


def truncate_file(name: str, text: str, max_chars: int) -> str:
    """Keep the head (70 %) and tail (20 %) of an oversized file, with a marker between."""
    if len(text) <= max_chars:
        return text
    head, tail = int(max_chars * 0.7), int(max_chars * 0.2)
    marker = f"\n[...truncated, read {name} for full content...]\n"
    return text[:head] + marker + text[-tail:]


@dataclass(frozen=True, slots=True)
class _CachedFiles:
    read_at: float
    files: tuple[tuple[str, str], ...]


class WorkspaceFiles:
    """Reads an agent's bootstrap files off the event loop, cached for a short while."""

    def __init__(self, max_chars: int) -> None:
        self._max_chars = max_chars
        self._cache: dict[Path, _CachedFiles] = {}
        # One read per workspace at a time: when the cache runs out under load, the turns
        # arriving meanwhile wait for that read instead of each starting one.
        self._reading: dict[Path, asyncio.Future[tuple[tuple[str, str], ...]]] = {}

    async def load(self, workspace: Path) -> tuple[tuple[str, str], ...]:
        cached = self._cache.get(workspace)
        if cached and time.monotonic() - cached.read_at < WORKSPACE_CACHE_SECONDS:
            return cached.files
        reading = self._reading.get(workspace)
        if reading is None:
            reading = asyncio.ensure_future(asyncio.to_thread(self._read, workspace))
            self._reading[workspace] = reading
            reading.add_done_callback(lambda _: self._reading.pop(workspace, None))
        files = await asyncio.shield(reading)  # one waiter cancelled leaves the read to others
        self._cache[workspace] = _CachedFiles(time.monotonic(), files)
        return files

    def _read(self, workspace: Path) -> tuple[tuple[str, str], ...]:
        found = []
        for name in BOOTSTRAP_FILES:
            try:
                text = (workspace / name).read_text(encoding="utf-8", errors="replace").rstrip()
            except OSError:
                continue
            if text:
                found.append((name, truncate_file(name, text, self._max_chars)))
        return tuple(found)


def system_prompt(
    *,
    agent: Agent,
    model_ref: str,
    default_ref: str,
    zone: ZoneInfo,
    files: tuple[tuple[str, str], ...],
    extra: str | None,
    now: datetime | None = None,
) -> str:
    """The system prompt of one run: fixed sections around the current time."""
    before, after = _sections(agent, model_ref, default_ref, zone.key, files, extra)
    stamp = format_timestamp(now) if now else _current_minute(zone)
    return f"{before}\nCurrent time: {stamp}\n{after}"


# Everything but the time is the same for every turn of an agent with the same files and
# request context: built once, not per request.
@functools.lru_cache(maxsize=64)
def _sections(
    agent: Agent,
    model_ref: str,
    default_ref: str,
    zone_key: str,
    files: tuple[tuple[str, str], ...],
    extra: str | None,
) -> tuple[str, str]:
    before = ["You are a personal assistant running inside Moltbot."]
    if agent.identity and agent.identity.name:
        emoji = f" {agent.identity.emoji}" if agent.identity.emoji else ""
        before.append(f"Your name is {agent.identity.name}{emoji}.")
    before += ["## Workspace", f"Your working directory is: {agent.workspace}"]
    before += ["## Current Date & Time", f"Time zone: {zone_key}"]
    after = []
    if extra:
        after += ["## Request Context", extra]
    if files:
        after += ["# Project Context", "The following workspace files were loaded:"]
        for name, text in files:
            after += [f"## {name}", text]
    after += ["## Runtime", _runtime_line(agent.id, model_ref, default_ref)]
    return "\n".join(before), "\n".join(after)


def _current_minute(zone: ZoneInfo) -> str:
    """`format_timestamp` of now, worked out once a minute."""
    minute = int(time.time() // 60)
    cached = _MINUTE_STAMPS.get(zone.key)
    if cached is None or cached[0] != minute:
        cached = (minute, format_timestamp(datetime.now(zone)))
        _MINUTE_STAMPS[zone.key] = cached
    return cached[1]


_MINUTE_STAMPS: dict[str, tuple[int, str]] = {}


@functools.cache
def _host_line() -> str:
    return (
        f"host={socket.gethostname()} | os={platform.system()} ({platform.machine()}) | "
        f"python={platform.python_version()}"
    )


def _runtime_line(agent_id: str, model_ref: str, default_ref: str) -> str:
    return (
        f"Runtime: agent={agent_id} | {_host_line()} | model={model_ref} "
        f"| default_model={default_ref}"
    )
