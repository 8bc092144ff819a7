"""Scenario (g) from the runner's side: the gateway's memory under long and unread answers, and
how long `/healthz` waits meanwhile.

The phase has a gateway process of its own on the offline echo model (no provider configured:
`builtin/echo` repeats the last user message, one delta per word). After a warm-up its idle RSS
is the baseline. Then, each part measured alone:
- g1: one request whose message is 20,000 words (a 40 KB body), answered whole, then the same
  streamed and read to the end; both answers are checked word for word;
- g2: 8 streaming requests of a 200 KB message each, on sockets that send the request and
  never read, held below the gateway's 30 s stall limit, then closed.
For each part: the peak RSS over the baseline (VmHWM after clear_refs, or sampled VmRSS), and
the worst `/healthz` latency of a prober in its own process probing every 50 ms throughout.
Other people share the machine: a guard kills the gateway when its RSS passes GUARD_MB.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench.echo_clients import Answer, UnreadStreams, echo, echo_request, words
from bench.gateway import Gateway, new_setup, start_gateway
from bench.metrics import FOREIGN, CpuWindow
from bench.procs import Child, cpu_seconds, free_port, reset_peak_rss, status_kb
from bench.runner import Bench, Target, cpu_snapshot, wait_for_quiet
from bench.wsrun import steady_rss_kb

G1_WORDS = 20_000
G2_STREAMS = 8
G2_WORDS = 100 * 1024  # two bytes a word: a 200 KB message, so a 200 KB echo
HOLD_SECONDS = 15.0  # g2's unread streams; the gateway cuts a reader off after 30 s
GROWTH_TARGET_MB = {"g1_whole": 64.0, "g1_stream": 64.0, "g2_unread": 128.0}
HEALTHZ_TARGET_MS = 500.0
GUARD_MB = 3072.0
REQUEST_TIMEOUT = 120.0
SETTLE_SECONDS = 2.0
RSS_SAMPLE_SECONDS = 0.05
TIMELINE_STEP = 1.0
PROBE_INTERVAL = 0.05
PROBE_REPORT_TIMEOUT = 15.0

TITLES = {
    "g1_whole": f"(g1) one {G1_WORDS:,}-word echo, non-stream",
    "g1_stream": f"(g1) one {G1_WORDS:,}-word echo, streamed and read",
    "g2_unread": f"(g2) {G2_STREAMS} streams of a 200 KB echo, never read",
}


class RssWatch:
    """The gateway's peak RSS over a part; kills it when it passes the guard."""

    def __init__(self, child: Child, guard_mb: float) -> None:
        self._child = child
        self._guard_kb = guard_mb * 1024
        self.exact = reset_peak_rss(child.pid)
        self.sampled_kb = float(status_kb(child.pid, "VmRSS"))
        self.killed_at_mb: float | None = None
        self.killed_after_s: float | None = None
        self.timeline: list[tuple[float, float]] = []  # (s into the part, MB) every TIMELINE_STEP
        self._task = asyncio.create_task(self._sample())

    async def _sample(self) -> None:
        started = time.monotonic()
        next_point = started
        while self._child.running:
            try:
                rss = status_kb(self._child.pid, "VmRSS")
            except (OSError, KeyError):  # gone (a zombie has no VmRSS line)
                return
            self.sampled_kb = max(self.sampled_kb, rss)
            if (now := time.monotonic()) >= next_point:
                self.timeline.append((round(now - started, 2), round(rss / 1024, 1)))
                next_point += TIMELINE_STEP
            if rss > self._guard_kb:
                self.killed_at_mb, self.killed_after_s = rss / 1024, now - started
                with contextlib.suppress(ProcessLookupError):
                    self._child.process.kill()
                print(f"  (g) guard: gateway killed at {rss / 1024:.0f} MB RSS", flush=True)
                return
            await asyncio.sleep(RSS_SAMPLE_SECONDS)

    def stop(self) -> float:
        """Peak RSS in MB."""
        self._task.cancel()
        peak_kb = self.sampled_kb
        if self.exact and self._child.running:
            with contextlib.suppress(OSError, KeyError):
                peak_kb = max(peak_kb, status_kb(self._child.pid, "VmHWM"))
        return peak_kb / 1024


class Probe:
    """The `/healthz` prober child: `window()` is what it saw since the last call."""

    def __init__(self, child: Child) -> None:
        self.child = child

    async def window(self) -> dict[str, Any]:
        self.child.write_line("report")
        line = await self.child.read_line(PROBE_REPORT_TIMEOUT)
        return json.loads(line) if line else {"probes": 0, "failures": 0, "worst_ms": None}


Action = Callable[[Gateway], Awaitable[dict[str, Any]]]


async def measure_memory(bench: Bench) -> dict[str, Any]:
    hold = bench.options.memory_hold_seconds
    setup = new_setup(bench.root, "memory", free_port())
    gateway = await start_gateway(bench.kids, setup, None, bench.options.log_level)
    print(f"gateway memory: {gateway.url} (pid {gateway.pid}, log {setup.log_path})", flush=True)
    prober = await bench.kids.start_python(
        "healthz",
        ["bench.healthz", "--port", str(setup.port), "--interval", str(PROBE_INTERVAL)],
    )
    try:
        if (line := await prober.read_line(30)) != "ready":
            raise RuntimeError(f"healthz prober: expected 'ready', got {line!r}")
        return await _measure_all(bench, gateway, Probe(prober), hold)
    finally:
        await bench.kids.stop(prober, timeout=5)
        await bench.kids.stop(gateway.child, timeout=15)


async def _measure_all(bench: Bench, gateway: Gateway, probe: Probe, hold: float) -> dict[str, Any]:
    problems = [a.problem for a in await _warm_up(gateway) if a.problem]
    if problems:
        return {"skipped": f"the warm-up echo failed: {problems[0]}"}
    await asyncio.sleep(SETTLE_SECONDS)
    idle_kb = await steady_rss_kb(gateway.pid)
    print(f"  (g) idle after warm-up: {idle_kb / 1024:.1f} MB", flush=True)
    result: dict[str, Any] = {
        "idle_rss_mb": idle_kb / 1024,
        "guard_mb": GUARD_MB,
        "hold_seconds": hold,
        "parts": {},
    }
    g1 = words(G1_WORDS)
    actions: dict[str, Action] = {
        "g1_whole": lambda gw: _echo_part(gw, g1, stream=False),
        "g1_stream": lambda gw: _echo_part(gw, g1, stream=True),
        "g2_unread": lambda gw: _unread_part(gw, hold),
    }
    for name, action in actions.items():
        if not gateway.child.running:
            result["parts"][name] = {"skipped": "the gateway was killed in an earlier part"}
        elif bench.out_of_time:
            result["parts"][name] = {"skipped": "over the time limit"}
        else:
            part = await _measure_part(bench, gateway, probe, action, idle_kb)
            result["parts"][name] = part
            print_part(name, part)
    return result


async def _warm_up(gateway: Gateway) -> list[Answer]:
    """A short echo each way, so code loaded on first use is not charged to a part."""
    port, token, text = gateway.setup.port, gateway.setup.token, words(50)
    return [
        await echo(port, token, text, stream=stream, timeout=REQUEST_TIMEOUT)
        for stream in (False, True)
    ]


async def _measure_part(
    bench: Bench, gateway: Gateway, probe: Probe, action: Action, idle_kb: float
) -> dict[str, Any]:
    target = Target("gateway", gateway.setup.port, gateway.setup.token, gateway.pid)
    if (waited := await wait_for_quiet(bench, target)) > 0:
        print(f"  waited {waited:.1f} s for other work on the machine to stop", flush=True)
    await probe.window()  # start a fresh window
    rss_before_kb = status_kb(gateway.pid, "VmRSS")
    watch = RssWatch(gateway.child, GUARD_MB)
    before, started = cpu_snapshot(bench, target), time.perf_counter()
    part = await action(gateway)
    wall = time.perf_counter() - started
    after = cpu_snapshot(bench, target) if gateway.child.running else None
    peak_mb = watch.stop()
    if watch.killed_at_mb is not None:
        await asyncio.wait_for(gateway.child.process.wait(), 10)
    healthz = await probe.window()
    part.update(
        rss_before_mb=rss_before_kb / 1024,
        peak_rss_mb=peak_mb,
        growth_mb=peak_mb - idle_kb / 1024,
        peak_method="VmHWM after clear_refs" if watch.exact else "sampled VmRSS",
        killed_by_guard_at_mb=watch.killed_at_mb,
        killed_after_s=watch.killed_after_s,
        rss_timeline_mb=watch.timeline,
        wall_seconds=wall,
        healthz=healthz,
    )
    if after is not None and gateway.child.running:
        window = CpuWindow(wall, {k: after[k] - before[k] for k in before})
        part["gw_cpu_share"] = window.seconds["target"] / wall
        part["foreign_share"] = window.foreign()
        await asyncio.sleep(SETTLE_SECONDS)
        part["rss_after_mb"] = await steady_rss_kb(gateway.pid) / 1024
    return part


async def _echo_part(gateway: Gateway, message: str, *, stream: bool) -> dict[str, Any]:
    answer = await echo(
        gateway.setup.port, gateway.setup.token, message, stream=stream, timeout=REQUEST_TIMEOUT
    )
    return {
        "status": answer.status,
        "answer_ok": answer.problem is None,
        "problem": answer.problem,
        "answer_seconds": answer.seconds,
        "answer_bytes": answer.body_bytes,
        "sse_frames": answer.frames,
    }


async def _unread_part(gateway: Gateway, hold: float) -> dict[str, Any]:
    """Send the streams, hold them unread, note how far the gateway got, close them and wait
    for the gateway to let go. Its CPU over the second half of the hold shows whether it
    was held back (near 0) or kept producing into memory."""
    port, token = gateway.setup.port, gateway.setup.token
    request = echo_request(port, token, words(G2_WORDS), stream=True)
    streams = UnreadStreams()
    result: dict[str, Any] = {"streams": G2_STREAMS, "request_bytes": len(request)}
    began = time.monotonic()
    try:
        await streams.open(port, request, G2_STREAMS)
        started = time.monotonic()
        result["sent_at_s"] = started - began  # into the part, as the prober's offsets are
        if await _hold(gateway, hold / 2):
            result["queued_bytes_mid"] = streams.queued()
            cpu_mid = cpu_seconds(gateway.pid)
            if await _hold(gateway, hold / 2):
                result["queued_bytes_end"] = streams.queued()
                result["gateway_send_queue_bytes_end"] = streams.peer_send_queues(port)
                result["gw_cpu_share_late_hold"] = (cpu_seconds(gateway.pid) - cpu_mid) / (hold / 2)
        result["held_seconds"] = time.monotonic() - started
    except (OSError, TimeoutError) as exc:
        result["problem"] = f"{exc.__class__.__name__}: {exc}"
    finally:
        streams.close()
        result["closed_at_s"] = time.monotonic() - began
    await asyncio.sleep(SETTLE_SECONDS)  # the runs end; still inside the part's windows
    return result


async def _hold(gateway: Gateway, seconds: float) -> bool:
    """Wait, in steps; False as soon as the gateway is gone."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if not gateway.child.running:
            return False
        await asyncio.sleep(min(0.25, left))
    return gateway.child.running


def print_part(name: str, part: dict[str, Any]) -> None:
    healthz = part.get("healthz", {})
    worst = healthz.get("worst_ms") or float("nan")
    notes = []
    if killed := part.get("killed_by_guard_at_mb"):
        notes.append(f"KILLED by the guard at {killed:.0f} MB, {part['killed_after_s']:.1f} s in")
    if problem := part.get("problem"):
        notes.append(f"problem: {problem}")
    if "queued_bytes_end" in part:
        queued = sum(part["queued_bytes_end"]) / 1024
        sent = sum(part["gateway_send_queue_bytes_end"]) / 1024
        late_cpu = part["gw_cpu_share_late_hold"]
        notes.append(
            f"unread in the kernel {queued:.0f} KB (clients) + {sent:.0f} KB (gateway), "
            f"gw CPU late in the hold {late_cpu:.2f}"
        )
    if (foreign := part.get("foreign_share", 0.0)) >= FOREIGN:
        notes.append(f"other work on the machine ({foreign:.2f} of a core)")
    print(
        f"  ({name}) peak {part['peak_rss_mb']:.1f} MB (+{part['growth_mb']:.1f} over idle) "
        f"in {part['wall_seconds']:.1f} s; /healthz worst {worst:.0f} ms over "
        f"{healthz.get('probes', 0)} probes, {healthz.get('failures', 0)} failed, "
        f"slowest (s into the part, ms) {healthz.get('slowest', [])}"
        + "".join(f"; {n}" for n in notes),
        flush=True,
    )
