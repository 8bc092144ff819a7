"""Running one command for the `exec` tool: its own process group, a deadline, an output cap.

The command starts in a new session (`start_new_session`), so it and everything it starts
share one process group that can be killed as a whole (`os.killpg`). The group is killed when
the deadline passes, when the run is aborted (the task is cancelled), and also when the command
itself exits: nothing it left running in the background outlives the tool call.

stdout and stderr are read together as they come. At most `max_bytes` are kept: the first half
and the last half, with a note of how much was dropped between them; the rest is read and
thrown away so that the command never blocks on a full pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

READ_CHUNK = 65536
# After the command exits (or is killed), how long the rest of its output may take to arrive.
DRAIN_SECONDS = 2.0
REAP_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Finished:
    exit_code: int | None  # None: killed at the deadline
    output: str
    timed_out: bool


class OutputCap:
    """The head and tail of a stream of bytes, at most `limit` in all."""

    def __init__(self, limit: int) -> None:
        self._head_limit = limit // 2
        self._tail_limit = limit - self._head_limit
        self._head = bytearray()
        self._tail = bytearray()
        self.dropped = 0

    def add(self, chunk: bytes) -> None:
        room = self._head_limit - len(self._head)
        if room > 0:
            self._head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self._tail += chunk
            excess = len(self._tail) - self._tail_limit
            if excess > 0:
                self.dropped += excess
                del self._tail[:excess]

    def text(self) -> str:
        head = self._head.decode("utf-8", "replace")
        tail = self._tail.decode("utf-8", "replace")
        if not self.dropped:
            return head + tail
        return f"{head}\n[... {self.dropped} bytes of output omitted ...]\n{tail}"


async def run_process(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    timeout: float,
    max_bytes: int,
) -> Finished:
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=dict(env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    cap = OutputCap(max_bytes)
    assert process.stdout is not None
    reader = asyncio.create_task(_collect(process.stdout, cap), name=f"exec output {process.pid}")
    timed_out = False
    try:
        try:
            async with asyncio.timeout(timeout):
                await process.wait()
        except TimeoutError:
            timed_out = True
    finally:
        # Whatever happened (exit, deadline, cancellation): the whole group goes, now.
        kill_group(process.pid)
        await _settle(process, reader)
    return Finished(None if timed_out else process.returncode, cap.text(), timed_out)


async def _collect(stream: asyncio.StreamReader, cap: OutputCap) -> None:
    while chunk := await stream.read(READ_CHUNK):
        cap.add(chunk)


async def _settle(process: asyncio.subprocess.Process, reader: asyncio.Task[None]) -> None:
    """Reap the killed process and let its last output arrive, both bounded. Runs during a
    cancellation too: these waits are short, and the processes are dead already."""
    with contextlib.suppress(TimeoutError, ProcessLookupError):
        await asyncio.wait_for(asyncio.shield(process.wait()), REAP_SECONDS)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(reader), DRAIN_SECONDS)
    if not reader.done():
        reader.cancel()


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
