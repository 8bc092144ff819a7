"""Drives a whole `make bench` run: processes up, scenarios interleaved, processes down.

Order: the upstream workers and load workers start once; the seeded store is written before
anything is measured; then each phase gets a gateway process of its own, so one phase's
memory cannot inflate another's: "ws" (f), "main" (a-e), "seeded" (e after 100k sessions).
Within a phase every repetition runs each scenario straight at the upstream and through the
gateway back to back, alternating which side goes first.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.gateway import Gateway, new_setup, start_gateway
from bench.metrics import CpuWindow, RunResult, fill_cpu, fill_latencies
from bench.procs import (
    Child,
    Children,
    cpu_seconds,
    free_port,
    reset_peak_rss,
    status_kb,
)
from bench.scenarios import Scenario, Side, requests_for
from bench.seed import seed_store

READY_TIMEOUT = 30.0
CONNECT_PHASE_TIMEOUT = 60.0
RSS_SAMPLE_SECONDS = 0.05


@dataclass
class Options:
    scenarios: tuple[Scenario, ...]
    reps: int
    upstream_workers: int
    load_workers: int
    cap_seconds: float
    warmup: int
    ws_count: int  # 0: skip (f)
    seed_sessions: int
    log_level: str | None
    profile: frozenset[str]
    max_minutes: float
    results_dir: Path


@dataclass
class Bench:
    kids: Children
    options: Options
    root: Path
    upstream_port: int
    upstream: list[Child]
    load: list[Child]
    started: float = field(default_factory=time.monotonic)
    results: list[RunResult] = field(default_factory=list)
    ws: dict[str, Any] = field(default_factory=dict)
    profiles: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    peak_rss_method: str = "VmHWM after clear_refs"

    @property
    def out_of_time(self) -> bool:
        return time.monotonic() - self.started > self.options.max_minutes * 60


# -- starting the fixed processes -------------------------------------------------------------


async def start_upstream(kids: Children, workers: int) -> tuple[int, list[Child]]:
    port = free_port()
    children = [
        await kids.start_python(f"upstream-{i}", ["bench.upstream", "--port", str(port)])
        for i in range(workers)
    ]
    for child in children:
        await expect_line(child, "ready")
    return port, children


async def start_load(kids: Children, workers: int) -> list[Child]:
    children = [await kids.start_python(f"load-{i}", ["bench.load"]) for i in range(workers)]
    for child in children:
        await expect_line(child, "ready")
    return children


async def expect_line(child: Child, wanted: str) -> None:
    line = await child.read_line(READY_TIMEOUT)
    if line != wanted:
        raise RuntimeError(f"{child.name}: expected {wanted!r}, got {line!r}")


# -- one measured run -------------------------------------------------------------------------


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def load_jobs(
    scenario: Scenario, requests: list[bytes], port: int, workers: int, options: Options
) -> list[dict[str, Any]]:
    """The scenario's connections and requests spread over the load workers."""
    conns = split(scenario.concurrency, workers)
    counts = split(scenario.count, workers)
    jobs, first = [], 0
    for conc, count in zip(conns, counts, strict=True):
        mine = requests[first : first + conc] if len(requests) > 1 else requests
        first += conc
        jobs.append(
            {
                "host": "127.0.0.1",
                "port": port,
                "requests": [r.decode("latin-1") for r in mine],
                "concurrency": conc,
                "count": count,
                "stream": scenario.stream,
                "cap_seconds": options.cap_seconds,
                "warmup": options.warmup,
            }
        )
    return jobs


def cpu_snapshot(bench: Bench, gateway: Gateway | None) -> dict[str, float]:
    children = [*bench.upstream, *bench.load]
    snapshot = {child.name: cpu_seconds(child.pid) for child in children}
    if gateway is not None:
        snapshot["gateway"] = cpu_seconds(gateway.pid)
    return snapshot


class PeakRss:
    """The gateway's peak RSS over a window: VmHWM after a reset where the kernel lets us,
    else the highest VmRSS seen by sampling."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self.exact = reset_peak_rss(pid)
        self._peak_kb = status_kb(pid, "VmRSS")
        self._sampler = None if self.exact else asyncio.create_task(self._sample())

    async def _sample(self) -> None:
        while True:
            self._peak_kb = max(self._peak_kb, status_kb(self._pid, "VmRSS"))
            await asyncio.sleep(RSS_SAMPLE_SECONDS)

    def stop(self) -> float:
        """Peak RSS in MB."""
        if self._sampler is not None:
            self._sampler.cancel()
            return self._peak_kb / 1024
        return status_kb(self._pid, "VmHWM") / 1024


async def measure(
    bench: Bench, scenario: Scenario, side: Side, rep: int, gateway: Gateway
) -> RunResult:
    result = RunResult(scenario.key, side, rep)
    port = bench.upstream_port if side == "direct" else gateway.setup.port
    tag = f"{scenario.key}{side[0]}{rep}-{int(time.time())}"
    requests = requests_for(scenario, side, port, gateway.setup.token, tag)
    workers = bench.load[: max(1, min(len(bench.load), scenario.concurrency))]
    jobs = load_jobs(scenario, requests, port, len(workers), bench.options)
    for worker, job in zip(workers, jobs, strict=True):
        worker.write_line(json.dumps(job))
    ready = [json.loads(await w.read_line(CONNECT_PHASE_TIMEOUT)) for w in workers]
    if fatal := [r["fatal"] for r in ready if "fatal" in r]:
        result.note = f"load generator could not start: {fatal[0]}"
        result.errors = scenario.count
        for worker, answer in zip(workers, ready, strict=True):
            if "fatal" not in answer:  # it waits for "go": let it run and drop its result
                worker.write_line("go")
                await worker.read_line(bench.options.cap_seconds + 30)
        return result
    await timed_window(bench, result, workers, gateway if side == "gateway" else None)
    if side == "gateway":
        result.sessions_stored = count_sessions(gateway.setup.store_path)
    return result


async def timed_window(
    bench: Bench, result: RunResult, workers: Sequence[Child], gateway: Gateway | None
) -> None:
    """Start the load, wait for it, and charge CPU and memory to the window."""
    peak = PeakRss(gateway.pid) if gateway is not None else None
    log_size = gateway.setup.log_path.stat().st_size if gateway is not None else 0
    before, started = cpu_snapshot(bench, gateway), time.perf_counter()
    for worker in workers:
        worker.write_line("go")
    lines = [await w.read_line(bench.options.cap_seconds + 30) for w in workers]
    wall = time.perf_counter() - started
    after = cpu_snapshot(bench, gateway)
    loads = [json.loads(line) for line in lines]
    fill_latencies(result, loads)
    window = CpuWindow(wall, {name: after[name] - before[name] for name in before})
    fill_cpu(result, window, os.cpu_count() or 1)
    if peak is not None and gateway is not None:
        result.gw_peak_rss_mb = peak.stop()
        bench.peak_rss_method = "VmHWM after clear_refs" if peak.exact else "sampled VmRSS"
        logged = gateway.setup.log_path.stat().st_size - log_size
        requests = result.completed + result.errors
        result.log_bytes_per_req = logged / max(1, requests)


def count_sessions(store: Path) -> int | None:
    """Sessions in the gateway's store, read-only, between runs."""
    try:
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5) as conn:
            return int(conn.execute("SELECT count(*) FROM sessions").fetchone()[0])
    except sqlite3.Error:
        return None


# -- phases -----------------------------------------------------------------------------------


async def run_reps(bench: Bench, gateway: Gateway, scenarios: Sequence[Scenario]) -> None:
    for rep in range(bench.options.reps):
        for scenario in scenarios:
            sides: tuple[Side, Side] = ("direct", "gateway")
            for side in sides if rep % 2 == 0 else sides[::-1]:
                if bench.out_of_time:
                    note = f"skipped {scenario.key}/{side} rep {rep + 1}: over the time limit"
                    bench.notes.append(note)
                    continue
                result = await measure(bench, scenario, side, rep, gateway)
                bench.results.append(result)
                print_progress(result)


def print_progress(r: RunResult) -> None:
    ttft = "" if math.isnan(r.ttft_p50_ms) else f" ttft50 {r.ttft_p50_ms:.2f} ms"
    gateway = (
        f" | gw {r.gw_cpu_ms_per_req:.3f} cpu-ms/req, peak {r.gw_peak_rss_mb:.1f} MB"
        if r.side == "gateway"
        else ""
    )
    print(
        f"  ({r.scenario}) {r.side:7} rep {r.rep + 1}: {r.rps:8.1f} req/s  p50 {r.p50_ms:.2f} "
        f"p99 {r.p99_ms:.2f} ms{ttft}  errors {r.errors}{gateway} | load {r.load_share:.2f} "
        f"upstream {r.upstream_share:.2f} host {r.host_share:.2f}"
        + (f" {r.note}" if r.note else ""),
        flush=True,
    )
    for sample in r.error_samples[:2]:
        print(f"      error: {sample}", flush=True)


async def with_gateway(bench: Bench, name: str, store: Path | None, body: Any) -> None:
    """Start a gateway for one phase, run `body(gateway)`, stop it."""
    setup = new_setup(bench.root, name, free_port(), store)
    gateway = await start_gateway(bench.kids, setup, bench.upstream_port, bench.options.log_level)
    print(f"gateway {name}: {gateway.url} (pid {gateway.pid}, log {setup.log_path})", flush=True)
    try:
        await body(gateway)
    finally:
        await bench.kids.stop(gateway.child, timeout=15)


async def run_phase(bench: Bench, phase: str, store: Path | None) -> None:
    scenarios = [s for s in bench.options.scenarios if s.phase == phase]
    if not scenarios:
        return

    async def body(gateway: Gateway) -> None:
        await run_reps(bench, gateway, scenarios)
        for scenario in scenarios:
            if scenario.key in bench.options.profile and not bench.out_of_time:
                from bench.profile import profile_scenario

                path = await profile_scenario(bench, scenario, gateway)
                if path is not None:
                    bench.profiles[scenario.key] = path

    await with_gateway(bench, phase, store, body)


async def run_ws_phase(bench: Bench) -> None:
    from bench.wsrun import measure_ws

    async def body(gateway: Gateway) -> None:
        bench.ws = await measure_ws(bench, gateway)

    await with_gateway(bench, "ws", None, body)


async def run_all(options: Options, root: Path) -> Bench:
    async with Children() as kids:
        upstream_port, upstream = await start_upstream(kids, options.upstream_workers)
        load = await start_load(kids, options.load_workers)
        bench = Bench(kids, options, root, upstream_port, upstream, load)
        seeded_store = await seed_if_needed(bench)
        if options.ws_count > 0:
            await run_ws_phase(bench)
        await run_phase(bench, "main", None)
        await run_phase(bench, "seeded", seeded_store)
    return bench


async def seed_if_needed(bench: Bench) -> Path | None:
    if not any(s.phase == "seeded" for s in bench.options.scenarios):
        return None
    store = bench.root / "seeded-store" / "sessions.sqlite"
    store.parent.mkdir(parents=True, exist_ok=True)
    count = bench.options.seed_sessions
    print(f"seeding {count} sessions through SessionStore.record_turn ...", flush=True)
    seconds = await seed_store(store, count)
    bench.notes.append(f"seeded {count} sessions in {seconds:.1f} s before the seeded gateway")
    return store
