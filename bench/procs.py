"""Child processes and what /proc says about them: CPU time, RSS, peak RSS.

Every child is started through `Children`, which kills whatever is still running when the run
ends, on errors and Ctrl-C too. Children also get PR_SET_PDEATHSIG, so even a runner killed
with SIGKILL takes them down with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PR_SET_PDEATHSIG = 1
REPO = Path(__file__).resolve().parent.parent
LINE_LIMIT = 64 * 1024 * 1024  # a load worker's result line carries every latency


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    """Runs in the child between fork and exec."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


# -- /proc ------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """CPU time of the process so far, all its live threads, in nanosecond resolution.

    /proc/<pid>/task/*/schedstat is exact; /proc/<pid>/stat counts in clock ticks (10 ms),
    too coarse for a 100 ms run. The tick count is the fallback where schedstat is missing."""
    try:
        total = 0
        for task in Path(f"/proc/{pid}/task").iterdir():
            total += int((task / "schedstat").read_text().split()[0])
        return total / 1e9
    except (OSError, ValueError, IndexError):
        return _stat_cpu_seconds(pid)


def pids_named(name: str) -> list[int]:
    """Live processes whose command name is `name` (e.g. the PostgreSQL server's)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == name:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _stat_cpu_seconds(pid: int) -> float:
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def machine_cpu_seconds() -> float:
    """Busy CPU time of every process on the machine plus steal, from /proc/stat: compared with
    our processes' own it shows work we did not start. Interrupt time is left out: loopback
    traffic runs the receiver's TCP stack in softirq, which no process is charged for."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, _irq, _softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + steal) / CLOCK_TICKS


def status_kb(pid: int, name: str) -> int:
    """A `VmRSS`/`VmHWM`-style line of /proc/<pid>/status, in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise KeyError(name)


def reset_peak_rss(pid: int) -> bool:
    """Set VmHWM back to the current RSS; False where the kernel does not allow it."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def raise_open_files_limit(wanted: int) -> int:
    """Raise the soft RLIMIT_NOFILE (children inherit it); returns the limit in force."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


# -- children ---------------------------------------------------------------------------------


@dataclass
class Child:
    name: str
    process: asyncio.subprocess.Process

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    async def read_line(self, timeout: float) -> str:
        """The next stdout line, or '' if the child closed stdout."""
        async with asyncio.timeout(timeout):
            line = await self.process.stdout.readline()  # type: ignore[union-attr]
        return line.decode(errors="replace").strip()

    def write_line(self, text: str) -> None:
        self.process.stdin.write(text.encode() + b"\n")  # type: ignore[union-attr]

    async def stop(self, timeout: float = 10) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time."""
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                self.process.terminate()
            try:
                async with asyncio.timeout(timeout):
                    await self.process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()


class Children:
    """`async with Children() as kids:` every child started through it dies at the end."""

    def __init__(self) -> None:
        self._children: list[Child] = []

    async def __aenter__(self) -> Children:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop_all()

    async def start_python(
        self,
        name: str,
        module_args: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        stdin: Any = asyncio.subprocess.PIPE,
        stdout: Any = asyncio.subprocess.PIPE,
        stderr: int | IO[Any] | None = None,
    ) -> Child:
        """`python -m ...` with this interpreter, from the repo root."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            *module_args,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            env=env,
            cwd=REPO,
            start_new_session=True,  # Ctrl-C reaches the runner alone; it stops them in order
            preexec_fn=_die_with_parent,
            limit=LINE_LIMIT,
        )
        child = Child(name, process)
        self._children.append(child)
        return child

    async def start_exec(self, name: str, argv: Sequence[str], **kwargs: Any) -> Child:
        """Any program (e.g. py-spy), same lifetime rules as the Python children."""
        process = await asyncio.create_subprocess_exec(
            *argv, cwd=REPO, start_new_session=True, preexec_fn=_die_with_parent, **kwargs
        )
        child = Child(name, process)
        self._children.append(child)
        return child

    async def stop(self, child: Child, timeout: float = 10) -> None:
        await child.stop(timeout)
        if child in self._children:
            self._children.remove(child)

    async def stop_all(self) -> None:
        children, self._children = self._children, []
        await asyncio.gather(*(child.stop(5) for child in children), return_exceptions=True)
