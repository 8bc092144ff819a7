"""Drives a whole `make bench` run: processes up, scenarios interleaved, processes down.

Order: the upstream workers and load workers start once; the seeded store is written before
anything is measured; then each phase gets a gateway process of its own, so one phase's
memory cannot inflate another's: "ws" (f), "main" (a-e), "seeded" (e after 100k sessions),
"memory" (g, on the offline echo model; bench/memory.py).
Within a phase every repetition runs each scenario straight at the upstream and through the
gateway back to back, alternating which side goes first.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import secrets
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from bench.gateway import Gateway, new_setup, start_gateway
from bench.metrics import CpuWindow, RunResult, fill_cpu, fill_latencies
from bench.pg import ADMIN_DSN, create_database, drop_database
from bench.procs import (
    Child,
    Children,
    cpu_seconds,
    free_port,
    machine_cpu_seconds,
    pids_named,
    reset_peak_rss,
    status_kb,
)
from bench.scenarios import Scenario, Side, requests_for
from bench.seed import seed_store

READY_TIMEOUT = 30.0
CONNECT_PHASE_TIMEOUT = 60.0
RSS_SAMPLE_SECONDS = 0.05
# Before each run: up to QUIET_CHECKS windows of QUIET_WINDOW s until others use < QUIET_LIMIT
# of a core. /proc/stat counts in 10 ms ticks, so a window shorter than this is too coarse.
QUIET_CHECKS = 60
QUIET_WINDOW = 0.5
QUIET_LIMIT = 0.2


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
    floor: bool = False
    memory_hold_seconds: float = 0.0  # (g)'s unread streams are held this long; 0: skip (g)
    # The `--workers` phase: (b) and (e) through this many workers on PostgreSQL (0: skip).
    pg_workers: int = 2
    pg_dsn: str = ADMIN_DSN  # a server where the run may create (and drop) a database
    pg_sync: str = "off"  # synchronous_commit for the gateway's sessions: "off" or "on"


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
    memory: dict[str, Any] = field(default_factory=dict)  # (g)
    profiles: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    peak_rss_method: str = "VmHWM after clear_refs"
    floor: Child | None = None  # --floor: the bare aiohttp proxy
    floor_port: int = 0
    floor_token: str = ""

    @property
    def out_of_time(self) -> bool:
        return time.monotonic() - self.started > self.options.max_minutes * 60


@dataclass(frozen=True)
class Target:
    """Where a run's requests go, and the process charged for them (None: direct)."""

    side: Side
    port: int
    token: str
    pid: int | None = None  # the process whose memory is measured
    log_path: Path | None = None
    store_path: Path | None = None
    cpu_pids: tuple[int, ...] = ()  # the processes charged for CPU (default: `pid`)

    @property
    def charged(self) -> tuple[int, ...]:
        return self.cpu_pids or (() if self.pid is None else (self.pid,))


def targets(bench: Bench, gateway: Gateway) -> dict[Side, Target]:
    setup = gateway.setup
    found: dict[Side, Target] = {
        "direct": Target("direct", bench.upstream_port, setup.token),
        "gateway": Target(
            "gateway", setup.port, setup.token, gateway.pid, setup.log_path, setup.store_path
        ),
    }
    if bench.floor is not None:
        found["floor"] = Target("floor", bench.floor_port, bench.floor_token, bench.floor.pid)
    return found


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


def cpu_snapshot(bench: Bench, target: Target) -> dict[str, float]:
    children = [*bench.upstream, *bench.load]
    snapshot = {child.name: cpu_seconds(child.pid) for child in children}
    if target.charged:
        snapshot["target"] = sum(cpu_seconds(pid) for pid in target.charged)
    if target.side == "pg2":  # the database server is part of what is measured there
        snapshot["database"] = sum(_cpu_or_zero(pid) for pid in pids_named("postgres"))
    snapshot["machine"] = machine_cpu_seconds()
    return snapshot


def _cpu_or_zero(pid: int) -> float:
    try:
        return cpu_seconds(pid)
    except OSError:  # a backend that ended between listing and reading
        return 0.0


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


async def wait_for_quiet(bench: Bench, target: Target) -> float:
    """Wait (bounded) until nothing but our idle processes uses the CPU, so another team's
    test run does not land in our numbers; returns the seconds waited."""
    waited = 0.0
    for _ in range(QUIET_CHECKS):
        before = cpu_snapshot(bench, target)
        await asyncio.sleep(QUIET_WINDOW)
        after = cpu_snapshot(bench, target)
        window = CpuWindow(QUIET_WINDOW, {k: after[k] - before[k] for k in before})
        if window.foreign() < QUIET_LIMIT:
            return waited
        waited += QUIET_WINDOW
    return waited


async def measure(bench: Bench, scenario: Scenario, target: Target, rep: int) -> RunResult:
    result = RunResult(scenario.key, target.side, rep)
    if (waited := await wait_for_quiet(bench, target)) > 0:
        print(f"  waited {waited:.1f} s for other work on the machine to stop", flush=True)
    tag = f"{scenario.key}{target.side[0]}{rep}-{int(time.time())}"
    requests = requests_for(scenario, target.side, target.port, target.token, tag)
    workers = bench.load[: max(1, min(len(bench.load), scenario.concurrency))]
    jobs = load_jobs(scenario, requests, target.port, len(workers), bench.options)
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
    await timed_window(bench, result, workers, target)
    if target.store_path is not None:
        result.sessions_stored = count_sessions(target.store_path)
    return result


async def timed_window(
    bench: Bench, result: RunResult, workers: Sequence[Child], target: Target
) -> None:
    """Start the load, wait for it, and charge CPU and memory to the window."""
    peak = PeakRss(target.pid) if target.pid is not None else None
    log_size = target.log_path.stat().st_size if target.log_path is not None else 0
    before, started = cpu_snapshot(bench, target), time.perf_counter()
    for worker in workers:
        worker.write_line("go")
    lines = [await w.read_line(bench.options.cap_seconds + 30) for w in workers]
    wall = time.perf_counter() - started
    after = cpu_snapshot(bench, target)
    fill_latencies(result, [json.loads(line) for line in lines])
    window = CpuWindow(wall, {name: after[name] - before[name] for name in before})
    fill_cpu(result, window, os.cpu_count() or 1)
    if peak is not None:
        result.gw_peak_rss_mb = peak.stop()
        bench.peak_rss_method = "VmHWM after clear_refs" if peak.exact else "sampled VmRSS"
    if target.log_path is not None:
        logged = target.log_path.stat().st_size - log_size
        result.log_bytes_per_req = logged / max(1, result.completed + result.errors)


def count_sessions(store: Path) -> int | None:
    """Sessions in the gateway's store, read-only, between runs."""
    try:
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5) as conn:
            return int(conn.execute("SELECT count(*) FROM sessions").fetchone()[0])
    except sqlite3.Error:
        return None


# -- phases -----------------------------------------------------------------------------------


async def run_reps(
    bench: Bench,
    gateway: Gateway,
    scenarios: Sequence[Scenario],
    order: list[Target] | None = None,
) -> None:
    order = order or list(targets(bench, gateway).values())
    for rep in range(bench.options.reps):
        for scenario in scenarios:
            # Rotate which side goes first, so drift over a repetition hits each side alike.
            shift = rep % len(order)
            for target in order[shift:] + order[:shift]:
                if bench.out_of_time:
                    note = f"skipped {scenario.key}/{target.side} rep {rep + 1}: over time limit"
                    bench.notes.append(note)
                    continue
                result = await measure(bench, scenario, target, rep)
                bench.results.append(result)
                print_progress(result)


def print_progress(r: RunResult) -> None:
    ttft = "" if math.isnan(r.ttft_p50_ms) else f" ttft50 {r.ttft_p50_ms:.2f} ms"
    gateway = (
        f" | gw {r.gw_cpu_ms_per_req:.3f} cpu-ms/req, peak {r.gw_peak_rss_mb:.1f} MB"
        if r.side != "direct"
        else ""
    )
    print(
        f"  ({r.scenario}) {r.side:7} rep {r.rep + 1}: {r.rps:8.1f} req/s  p50 {r.p50_ms:.2f} "
        f"p99 {r.p99_ms:.2f} ms{ttft}  errors {r.errors}{gateway} | load {r.load_share:.2f} "
        f"upstream {r.upstream_share:.2f} host {r.host_share:.2f} others {r.foreign_share:.2f}"
        + (f" {r.note}" if r.note else ""),
        flush=True,
    )
    for sample in r.error_samples[:2]:
        print(f"      error: {sample}", flush=True)


async def with_gateway(
    bench: Bench,
    name: str,
    store: Path | None,
    body: Any,
    *,
    workers: int = 1,
    pg_dsn: str | None = None,
) -> None:
    """Start a gateway for one phase, run `body(gateway)`, stop it."""
    setup = new_setup(bench.root, name, free_port(), store)
    gateway = await start_gateway(
        bench.kids,
        setup,
        bench.upstream_port,
        bench.options.log_level,
        workers=workers,
        pg_dsn=pg_dsn,
        pg_sync=bench.options.pg_sync,
    )
    print(f"gateway {name}: {gateway.url} (pids {gateway.pids}, log {setup.log_path})", flush=True)
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

                path = await profile_scenario(bench, scenario, targets(bench, gateway)["gateway"])
                if path is not None:
                    bench.profiles[scenario.key] = path

    await with_gateway(bench, phase, store, body)


PG_SCENARIOS = ("b", "e")


async def run_pg_phase(bench: Bench) -> None:
    """(b) and (e) through `--workers N` on a fresh PostgreSQL database: the "pg2" side, beside
    the one-process SQLite figures of the main phase."""
    options = bench.options
    scenarios = [s for s in options.scenarios if s.key in PG_SCENARIOS and s.phase == "main"]
    if options.pg_workers < 1 or not scenarios:
        return
    try:
        name, dsn = await create_database(options.pg_dsn)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        bench.notes.append(f"skipped the --workers phase: no PostgreSQL server ({exc})")
        return

    async def body(gateway: Gateway) -> None:
        side = Target(
            "pg2",
            gateway.setup.port,
            gateway.setup.token,
            log_path=gateway.setup.log_path,
            cpu_pids=gateway.pids,
        )

        async def beside(one: Gateway) -> None:
            # The one-process side again, run by turns with pg2: the ratio then compares runs
            # minutes apart at most, not phases (this shared machine drifts by ±30 %).
            setup = one.setup
            one_side = Target(
                "sqlite1", setup.port, setup.token, one.pid, setup.log_path, setup.store_path
            )
            await run_reps(bench, gateway, scenarios, [one_side, side])

        await with_gateway(bench, "sqlite1", None, beside)

    bench.notes.append(
        f"pg2: --workers {options.pg_workers}, PostgreSQL with synchronous_commit="
        f"{options.pg_sync} (SQLite side: WAL, synchronous=NORMAL)"
    )
    try:
        await with_gateway(bench, "pg", None, body, workers=options.pg_workers, pg_dsn=dsn)
    finally:
        await drop_database(options.pg_dsn, name)


async def run_ws_phase(bench: Bench) -> None:
    from bench.wsrun import measure_ws

    async def body(gateway: Gateway) -> None:
        bench.ws = await measure_ws(bench, gateway)

    await with_gateway(bench, "ws", None, body)


async def run_memory_phase(bench: Bench) -> None:
    from bench.memory import measure_memory

    if bench.out_of_time:
        bench.notes.append("skipped (g): over time limit")
        return
    bench.memory = await measure_memory(bench)


async def run_all(options: Options, root: Path) -> Bench:
    async with Children() as kids:
        upstream_port, upstream = await start_upstream(kids, options.upstream_workers)
        load = await start_load(kids, options.load_workers)
        bench = Bench(kids, options, root, upstream_port, upstream, load)
        seeded_store = await seed_if_needed(bench)
        if options.floor:
            await start_floor(bench)
        if options.ws_count > 0:
            await run_ws_phase(bench)
        await run_phase(bench, "main", None)
        await run_pg_phase(bench)
        await run_phase(bench, "seeded", seeded_store)
        if options.memory_hold_seconds > 0:
            await run_memory_phase(bench)
    return bench


async def start_floor(bench: Bench) -> None:
    bench.floor_port, bench.floor_token = free_port(), secrets.token_urlsafe(16)
    args = ["--port", str(bench.floor_port), "--upstream-port", str(bench.upstream_port)]
    bench.floor = await bench.kids.start_python(
        "floor", ["bench.floor", *args, "--token", bench.floor_token]
    )
    await expect_line(bench.floor, "ready")


async def seed_if_needed(bench: Bench) -> Path | None:
    if not any(s.phase == "seeded" for s in bench.options.scenarios):
        return None
    store = bench.root / "seeded-store" / "sessions.sqlite"
    store.parent.mkdir(parents=True, exist_ok=True)
    count = bench.options.seed_sessions
    print(f"seeding {count} sessions through SqliteStore.record_turn ...", flush=True)
    seconds = await seed_store(store, count)
    bench.notes.append(f"seeded {count} sessions in {seconds:.1f} s before the seeded gateway")
    return store
