"""`--profile b,e`: sample the gateway with py-spy while one more gateway run of a scenario
goes on, and summarise where its CPU time goes.

py-spy is not a dependency of the project (install it by hand: `.venv/bin/pip install py-spy`).
It samples the gateway from outside (`--nonblocking`: the gateway is never paused), so the
profiled run's own numbers are slightly worse than the measured ones and are not reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import signal
import sys
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.runner import Bench, Target
    from bench.scenarios import Scenario

SAMPLE_RATE = 250
PROFILE_FACTOR = 3  # the profiled run is longer, for enough samples
TOP = 25
_LINE_NUMBER = re.compile(r":\d+\)$")


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def frame_name(frame: str) -> str:
    """`send (aiohttp/web_protocol.py:123)` without the line number, with a short path."""
    frame = _LINE_NUMBER.sub(")", frame)
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        frame = frame.replace(marker, "").replace("/usr/" + marker, "")
    return frame


@dataclass
class Profile:
    """Sample counts from py-spy's collapsed stacks, split by thread."""

    total: int = 0
    main: int = 0  # samples of the event-loop thread
    own: Counter[str] = field(default_factory=Counter)  # leaf frames, every thread
    inclusive: Counter[str] = field(default_factory=Counter)
    main_inclusive: Counter[str] = field(default_factory=Counter)
    threads: Counter[str] = field(default_factory=Counter)  # samples per thread role
    categories: Counter[str] = field(default_factory=Counter)  # event-loop samples by kind

    def add(self, thread: str, frames: list[str], count: int) -> None:
        role = thread_role(thread)
        on_loop = role == "event loop (MainThread)"
        self.total += count
        self.threads[role] += count
        self.own[frames[-1]] += count
        for name in set(frames):
            self.inclusive[name] += count
            if on_loop:
                self.main_inclusive[name] += count
        if on_loop:
            self.main += count
            self.categories[categorise(frames)] += count


# Where an event-loop sample belongs: the first category with a frame containing one of its
# patterns wins, so specific work comes before the layers that wrap it (every handler runs
# inside access_log_middleware and aiohttp's server; the upstream call inside the runtime).
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("access log line (structlog render + stderr write)", ("_write (moltbot/gateway/access_log",)),
    ("session store calls on the loop (queue, hand-off, wake-up)", ("moltbot/agents/store",)),
    ("WS hub: agent events fanned out", ("moltbot/gateway/ws/",)),
    ("SSE/JSON decode of the upstream answer", ("providers/sse.py", "openai_compat.py")),
    (
        "upstream HTTP client (aiohttp client, pool, request, response)",
        ("aiohttp/client", "aiohttp/connector", "providers/upstream.py"),
    ),
    ("failover plumbing", ("providers/failover.py",)),
    ("prompt building", ("agents/prompt.py", "AgentRuntime._model_request")),
    ("request parse, auth, validation", ("http/protocol.py", "read_json", "gateway/auth.py")),
    ("response building and writing", ("web_response.py", "http/sse.py", "http_writer.py")),
    (
        "run machinery (runtime, lanes, events, tasks)",
        ("agents/runtime.py", "agents/lanes.py", "agents/events.py"),
    ),
    ("chat handler own code", ("gateway/http/openai.py",)),
    ("aiohttp server (parse, dispatch, middlewares)", ("aiohttp/", "gateway/errors.py")),
    ("socket reads (asyncio transport)", ("asyncio/selector_events.py",)),
    ("event loop (epoll, scheduling, task steps)", ("",)),
)


def categorise(frames: list[str]) -> str:
    for name, patterns in CATEGORIES:
        if any(p in frame for p in patterns for frame in frames):
            return name
    return CATEGORIES[-1][0]


def thread_role(thread: str) -> str:
    """What a gateway thread is for, from the name py-spy --threads reports."""
    name = thread.partition(": ")[2]
    if name == "MainThread":
        return "event loop (MainThread)"
    if name.startswith("session-store"):
        return "session store thread (SQLite)"
    if name.startswith("asyncio"):
        return "default executor threads (to_thread)"
    return name or "unknown"


def summarise(collapsed: str) -> Profile:
    profile = Profile()
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        thread, *frames = [frame_name(f) for f in stack.split(";")]  # --threads: id first
        profile.add(thread, frames or [thread], int(count_text))
    return profile


def _percent(count: int, total: int) -> str:
    return f"{100 * count / max(1, total):5.1f}%"


def render(scenario: Scenario, profile: Profile) -> str:
    total = profile.total
    lines = [f"py-spy profile of the gateway under ({scenario.key}) {scenario.title}", ""]
    lines.append(f"{total} samples at {SAMPLE_RATE} Hz while on CPU (idle samples excluded)")
    for role, count in profile.threads.most_common():
        lines.append(f"  {_percent(count, total)}  {role}")
    lines += ["", "event-loop thread by kind of work (% of all samples):"]
    for name, count in profile.categories.most_common():
        lines.append(f"  {_percent(count, total)}  {name}")
    sections = (
        ("self time, every thread", profile.own, lambda _: True),
        ("inclusive time, every thread", profile.inclusive, lambda _: True),
        ("inclusive time, moltbot code", profile.inclusive, lambda n: "moltbot/" in n),
    )
    for title, counter, keep in sections:
        lines += ["", f"top {TOP} by {title} (% of all samples):"]
        chosen = [(n, c) for n, c in counter.most_common() if keep(n)][:TOP]
        lines += [f"  {_percent(count, total)}  {name}" for name, count in chosen]
    return "\n".join(lines) + "\n"


async def profile_scenario(bench: Bench, scenario: Scenario, gateway: Target) -> Path | None:
    from bench.runner import measure

    tool = py_spy()
    if tool is None:
        bench.notes.append("--profile: py-spy not found (.venv/bin/pip install py-spy)")
        return None
    raw = bench.options.results_dir / f"profile-{scenario.key}.collapsed"
    argv = [tool, "record", "--pid", str(gateway.pid), "--rate", str(SAMPLE_RATE)]
    argv += ["--format", "raw", "--output", str(raw), "--nonblocking", "--threads"]
    spy = await bench.kids.start_exec(
        "py-spy",
        argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await asyncio.sleep(1.0)  # attach before the load starts
    print(f"  profiling ({scenario.key}) with py-spy ...", flush=True)
    try:
        longer = replace(scenario, count=scenario.count * PROFILE_FACTOR)
        await measure(bench, longer, gateway, -1)
    finally:
        if spy.running:
            spy.process.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(30):
                    await spy.process.wait()
        await bench.kids.stop(spy, timeout=5)
    if not raw.exists():
        bench.notes.append(f"--profile {scenario.key}: py-spy wrote nothing (ptrace allowed?)")
        return None
    summary = bench.options.results_dir / f"profile-{scenario.key}.txt"
    summary.write_text(render(scenario, summarise(raw.read_text())))
    print(summary.read_text(), flush=True)
    return summary
