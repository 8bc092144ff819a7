"""Medians over the repetitions, the gateway/direct comparison and the targets of issue 6,
as Markdown tables (pasted into BENCHMARKS.md) and as JSON in bench/results/."""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.memory import GROWTH_TARGET_MB, HEALTHZ_TARGET_MS, SETTLE_SECONDS, TITLES
from bench.metrics import FOREIGN, RunResult, flags, median

if TYPE_CHECKING:
    from bench.runner import Bench


@dataclass
class Summary:
    """Medians over the repetitions of one scenario on one side (errors: the total)."""

    scenario: str
    side: str
    reps: int
    rps: float
    p50_ms: float
    p99_ms: float
    ttft_p50_ms: float
    errors: int
    gw_cpu_ms_per_req: float
    gw_cpu_share: float
    gw_peak_rss_mb: float
    load_share: float
    upstream_share: float
    host_share: float
    foreign_share: float
    sessions_stored: int | None
    log_bytes_per_req: float
    db_cpu_ms_per_req: float = math.nan
    flags: list[str] = field(default_factory=list)


def summarise(results: Sequence[RunResult]) -> dict[tuple[str, str], Summary]:
    groups: dict[tuple[str, str], list[RunResult]] = {}
    for result in results:
        if result.rep >= 0:  # rep -1: a profiled run, not a measurement
            groups.setdefault((result.scenario, result.side), []).append(result)
    return {key: _summary(runs) for key, runs in groups.items()}


def _summary(runs: list[RunResult]) -> Summary:
    def med(get: Callable[[RunResult], float]) -> float:
        return median(get(r) for r in runs)

    stored = [r.sessions_stored for r in runs if r.sessions_stored is not None]
    found = sorted({f for r in runs for f in flags(r)})
    return Summary(
        scenario=runs[0].scenario,
        side=runs[0].side,
        reps=len(runs),
        rps=med(lambda r: r.rps),
        p50_ms=med(lambda r: r.p50_ms),
        p99_ms=med(lambda r: r.p99_ms),
        ttft_p50_ms=med(lambda r: r.ttft_p50_ms),
        errors=sum(r.errors for r in runs),
        gw_cpu_ms_per_req=med(lambda r: r.gw_cpu_ms_per_req),
        gw_cpu_share=med(lambda r: r.gw_cpu_share),
        gw_peak_rss_mb=max((r.gw_peak_rss_mb for r in runs), default=math.nan),
        load_share=med(lambda r: r.load_share),
        upstream_share=med(lambda r: r.upstream_share),
        host_share=med(lambda r: r.host_share),
        foreign_share=med(lambda r: r.foreign_share),
        sessions_stored=max(stored) if stored else None,
        log_bytes_per_req=med(lambda r: r.log_bytes_per_req),
        db_cpu_ms_per_req=med(lambda r: r.db_cpu_ms_per_req),
        flags=found,
    )


def fmt(value: float, digits: int = 2) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:,.{digits}f}"


def results_table(summaries: dict[tuple[str, str], Summary], titles: dict[str, str]) -> str:
    head = (
        "| scenario | side | req/s | p50 ms | p99 ms | TTFT p50 ms | errors | gw CPU ms/req "
        "| gw CPU % of a core | gw peak RSS MB | CPU: load gen / upstream (busiest process, of a "
        "core) / ours (of all cores) / others (cores) | flags |"
    )
    lines = [head, "|" + "---|" * 12]
    for (key, side), s in summaries.items():
        shares = (
            f"{fmt(s.load_share)} / {fmt(s.upstream_share)} / {fmt(s.host_share)} "
            f"/ {fmt(s.foreign_share)}"
        )
        lines.append(
            f"| ({key}) {titles.get(key, '')} | {side} | {fmt(s.rps, 0)} | {fmt(s.p50_ms)} "
            f"| {fmt(s.p99_ms)} | {fmt(s.ttft_p50_ms)} | {s.errors} "
            f"| {fmt(s.gw_cpu_ms_per_req, 3)} | {fmt(s.gw_cpu_share * 100, 0)} "
            f"| {fmt(s.gw_peak_rss_mb, 1)} | {shares} | {'; '.join(s.flags) or '-'} |"
        )
    return "\n".join(lines)


def ratio_table(summaries: dict[tuple[str, str], Summary]) -> str:
    lines = [
        "| scenario | gateway/direct req/s | added p50 ms | added p99 ms | added TTFT p50 ms "
        "| sessions stored (max) | floor req/s | gateway CPU / floor CPU per request |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key in dict.fromkeys(k for k, _ in summaries):
        d, g = summaries.get((key, "direct")), summaries.get((key, "gateway"))
        if d is None or g is None:
            continue
        floor = summaries.get((key, "floor"))
        floor_rps = fmt(floor.rps, 0) if floor else "-"
        cpu_ratio = fmt(g.gw_cpu_ms_per_req / floor.gw_cpu_ms_per_req) if floor else "-"
        lines.append(
            f"| ({key}) | {fmt(g.rps / d.rps, 3)} | {fmt(g.p50_ms - d.p50_ms)} "
            f"| {fmt(g.p99_ms - d.p99_ms)} | {fmt(g.ttft_p50_ms - d.ttft_p50_ms)} "
            f"| {g.sessions_stored if g.sessions_stored is not None else '-'} "
            f"| {floor_rps} | {cpu_ratio} |"
        )
    return "\n".join(lines)


def workers_table(summaries: dict[tuple[str, str], Summary]) -> str:
    """The `--workers` phase beside the one-process SQLite runs of the same scenarios."""
    lines = [
        "| scenario | 1 process, SQLite req/s | --workers 2, PostgreSQL req/s | ratio "
        "| p50 ms (1 / 2) | p99 ms (1 / 2) | gateway CPU ms/req (1 / 2) "
        "| PostgreSQL server CPU ms/req | errors (1 / 2) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key in dict.fromkeys(k for k, _ in summaries):
        one, two = one_process(summaries, key), summaries.get((key, "pg2"))
        if one is None or two is None:
            continue
        lines.append(
            f"| ({key}) | {fmt(one.rps, 0)} | {fmt(two.rps, 0)} | {fmt(two.rps / one.rps, 2)} "
            f"| {fmt(one.p50_ms)} / {fmt(two.p50_ms)} | {fmt(one.p99_ms)} / {fmt(two.p99_ms)} "
            f"| {fmt(one.gw_cpu_ms_per_req, 3)} / {fmt(two.gw_cpu_ms_per_req, 3)} "
            f"| {fmt(two.db_cpu_ms_per_req, 3)} | {one.errors} / {two.errors} |"
        )
    return "\n".join(lines) if len(lines) > 2 else ""


def one_process(summaries: dict[tuple[str, str], Summary], key: str) -> Summary | None:
    """The one-process SQLite side of the --workers comparison: the runs made by turns with
    pg2 ("sqlite1"), else the main phase's."""
    return summaries.get((key, "sqlite1")) or summaries.get((key, "gateway"))


def workers_verdicts(summaries: dict[tuple[str, str], Summary]) -> list[Verdict]:
    """Issue 12: ≥ 1.7× the one-process throughput with 2 workers; (e) within 85 % of (b)."""
    out = []
    for key in ("b", "e"):
        one, two = one_process(summaries, key), summaries.get((key, "pg2"))
        target = f"({key}) --workers 2 on PostgreSQL ≥ 1.7× one process on SQLite"
        if one is None or two is None:
            out.append(Verdict(target, "not run", "n/a"))
            continue
        ratio = two.rps / one.rps
        out.append(Verdict(target, f"{fmt(ratio, 2)}×", _check(ratio >= 1.7)))
    b, e = summaries.get(("b", "pg2")), summaries.get(("e", "pg2"))
    target = "(e) ≥ 85% of (b), both --workers 2 on PostgreSQL"
    if b is None or e is None:
        out.append(Verdict(target, "not run", "n/a"))
    else:
        out.append(
            Verdict(target, f"{fmt(e.rps / b.rps, 3)} of (b)", _check(e.rps >= 0.85 * b.rps))
        )
    return out


@dataclass
class Verdict:
    target: str
    measured: str
    status: str  # "met", "MISSED", "n/a"
    caveat: str = ""


def _check(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "MISSED")


def _value(summaries: dict[tuple[str, str], Summary], key: str, side: str) -> Summary | None:
    return summaries.get((key, side))


def verdicts(
    summaries: dict[tuple[str, str], Summary], ws: dict[str, Any], memory: dict[str, Any]
) -> list[Verdict]:
    out: list[Verdict] = []

    def pair(key: str) -> tuple[Summary | None, Summary | None]:
        return _value(summaries, key, "direct"), _value(summaries, key, "gateway")

    def add(
        target: str, key: str, measure: Callable[[Summary, Summary], tuple[float, bool]], unit=""
    ) -> None:
        d, g = pair(key)
        if d is None or g is None:
            out.append(Verdict(target, "not run", "n/a"))
            return
        value, ok = measure(d, g)
        caveat = "; ".join(f for f in g.flags if f != "all cores busy")
        out.append(Verdict(target, f"{fmt(value, 3)}{unit}", _check(ok), caveat))

    add("(a) added latency p50 ≤ 0.5 ms", "a", lambda d, g: _le(g.p50_ms - d.p50_ms, 0.5), " ms")
    add("(a) added latency p99 ≤ 2 ms", "a", lambda d, g: _le(g.p99_ms - d.p99_ms, 2), " ms")
    add("(b) ≥ 2,500 req/s", "b", lambda d, g: _ge(g.rps, 2500), " req/s")
    add("(b) CPU ≤ 0.4 ms per request", "b", lambda d, g: _le(g.gw_cpu_ms_per_req, 0.4), " ms")
    add("(c) added TTFT p50 ≤ 1 ms", "c", lambda d, g: _le(g.ttft_p50_ms - d.ttft_p50_ms, 1), " ms")
    add("(c) ≥ 1,000 streams/s", "c", lambda d, g: _ge(g.rps, 1000), " streams/s")
    add("(d) ≥ 95% of direct req/s", "d", lambda d, g: _ge(g.rps / d.rps, 0.95))
    add("(d) no errors", "d", lambda d, g: (g.errors, g.errors == 0), " errors")
    add("(d) peak RSS ≤ 80 MB", "d", lambda d, g: _le(g.gw_peak_rss_mb, 80), " MB")
    out += persistence_verdicts(summaries)
    out += workers_verdicts(summaries)
    out.append(ws_verdict(ws))
    out += memory_verdicts(memory)
    return out


def _le(value: float, limit: float) -> tuple[float, bool]:
    return value, value <= limit


def _ge(value: float, limit: float) -> tuple[float, bool]:
    return value, value >= limit


def persistence_verdicts(summaries: dict[tuple[str, str], Summary]) -> list[Verdict]:
    """(e) and (e) after 100k sessions against (b), both through the gateway."""
    b = _value(summaries, "b", "gateway")
    out = []
    for key in ("e", "e100k"):
        e = _value(summaries, key, "gateway")
        target = f"({key}) ≥ 85% of (b) req/s"
        if b is None or e is None:
            out.append(Verdict(target, "not run", "n/a"))
            continue
        ratio = e.rps / b.rps
        out.append(Verdict(target, f"{fmt(ratio, 3)} of (b)", _check(ratio >= 0.85)))
    e, e100k = _value(summaries, "e", "gateway"), _value(summaries, "e100k", "gateway")
    target = "(e) cost does not grow with stored sessions (CPU/req at 100k ≤ 1.1× fresh)"
    if e is None or e100k is None:
        out.append(Verdict(target, "not run", "n/a"))
    else:
        growth = e100k.gw_cpu_ms_per_req / e.gw_cpu_ms_per_req
        out.append(Verdict(target, f"{fmt(growth, 3)}×", _check(growth <= 1.1)))
    return out


def ws_verdict(ws: dict[str, Any]) -> Verdict:
    target = "(f) ≤ 20 KB per idle WebSocket connection"
    if not ws:
        return Verdict(target, "not run", "n/a")
    if "skipped" in ws:
        return Verdict(target, f"skipped: {ws['skipped']}", "n/a")
    per = ws["kb_per_connection"]
    marginal = ws.get("kb_per_connection_second_half", math.nan)
    measured = (
        f"{fmt(per, 1)} KB ({ws['connected']}/{ws['requested']} connected; "
        f"second half alone {fmt(marginal, 1)} KB each)"
    )
    return Verdict(target, measured, _check(per <= 20))


def memory_verdicts(memory: dict[str, Any]) -> list[Verdict]:
    """(g): each part's peak RSS over the idle baseline, and /healthz throughout."""
    out = []
    parts = memory.get("parts", {})
    for key, limit in GROWTH_TARGET_MB.items():
        target = f"{TITLES[key]}: peak RSS ≤ idle + {limit:g} MB"
        part = parts.get(key) or {"skipped": memory.get("skipped", "not run")}
        if "skipped" in part:
            out.append(Verdict(target, part["skipped"], "n/a"))
            continue
        killed = part.get("killed_by_guard_at_mb")
        if killed is not None:
            measured = (
                f"over {memory['guard_mb'] / 1024:g} GB (killed by the guard at {killed:,.0f} MB, "
                f"{part['killed_after_s']:.1f} s in)"
            )
            out.append(Verdict(target, measured, "MISSED"))
            continue
        measured = (
            f"+{fmt(part['growth_mb'], 1)} MB (peak {fmt(part['peak_rss_mb'], 1)}, "
            f"idle {fmt(memory['idle_rss_mb'], 1)})"
        )
        problem = part.get("problem")
        ok = part["growth_mb"] <= limit and problem is None
        out.append(Verdict(target, measured, _check(ok), f"failed: {problem}" if problem else ""))
    out.append(healthz_verdict(memory, HEALTHZ_TARGET_MS))
    return out


def healthz_verdict(memory: dict[str, Any], limit_ms: float) -> Verdict:
    target = f"(g) /healthz answers within {limit_ms:g} ms throughout (g1) and (g2)"
    measured_parts = {k: p for k, p in memory.get("parts", {}).items() if p.get("healthz")}
    if not measured_parts:
        return Verdict(target, "not run", "n/a")
    worst = [p["healthz"].get("worst_ms") or math.nan for p in measured_parts.values()]
    failed = sum(p["healthz"].get("failures", 0) for p in measured_parts.values())
    measured = ", ".join(
        f"{key} {fmt(ms, 0)} ms" for key, ms in zip(measured_parts, worst, strict=True)
    )
    measured += f"; {failed} failed"
    ok = failed == 0 and all(ms <= limit_ms for ms in worst)
    busy = [
        f"{key}: other work {fmt(p['foreign_share'])} of a core"
        for key, p in measured_parts.items()
        if p.get("foreign_share", 0.0) >= FOREIGN
    ]
    return Verdict(target, measured, _check(ok), "; ".join(busy))


def memory_table(memory: dict[str, Any]) -> str:
    if not memory:
        return ""
    if "skipped" in memory:
        return f"(g) skipped: {memory['skipped']}"
    lines = [
        f"(g) idle RSS after warm-up {fmt(memory['idle_rss_mb'], 1)} MB; guard "
        f"{memory['guard_mb']:,.0f} MB; unread streams held {memory['hold_seconds']:g} s",
        "",
        "| part | RSS before MB | peak RSS MB | growth over idle MB | wall s | /healthz worst "
        "/ median ms (probes, failed) | gw CPU % of a core | others (cores) | notes |",
        "|" + "---|" * 9,
    ]
    for key, part in memory.get("parts", {}).items():
        if "skipped" in part:
            lines.append(f"| {TITLES[key]} | - | - | - | - | - | - | - | {part['skipped']} |")
            continue
        h = part.get("healthz") or {}
        probes = (
            f"{fmt(h.get('worst_ms') or math.nan, 0)} / {fmt(h.get('median_ms') or math.nan, 0)}"
        )
        probes += f" ({h.get('probes', 0)}, {h.get('failures', 0)})"
        lines.append(
            f"| {TITLES[key]} | {fmt(part['rss_before_mb'], 1)} | {fmt(part['peak_rss_mb'], 1)} "
            f"| {fmt(part['growth_mb'], 1)} | {fmt(part['wall_seconds'], 1)} | {probes} "
            f"| {fmt(part.get('gw_cpu_share', math.nan) * 100, 0)} "
            f"| {fmt(part.get('foreign_share', math.nan))} | {memory_notes(part)} |"
        )
    return "\n".join(lines)


def memory_notes(part: dict[str, Any]) -> str:
    notes = []
    if (killed := part.get("killed_by_guard_at_mb")) is not None:
        notes.append(f"killed by the guard at {killed:,.0f} MB, {part['killed_after_s']:.1f} s in")
    if problem := part.get("problem"):
        notes.append(f"failed: {problem}")
    if part.get("answer_ok"):
        frames = f", {part['sse_frames']:,} SSE frames" if part.get("sse_frames") else ""
        notes.append(
            f"full echo checked ({part['answer_bytes']:,} bytes{frames}) in "
            f"{fmt(part['answer_seconds'], 2)} s"
        )
    if "queued_bytes_end" in part:
        queued, sent = part["queued_bytes_end"], part["gateway_send_queue_bytes_end"]
        notes.append(
            f"answer bytes unread in the kernel at the end: {sum(queued):,} in the clients' "
            f"receive queues (mid-hold {sum(part['queued_bytes_mid']):,}) + {sum(sent):,} in "
            f"the gateway's send queues; gw CPU in the hold's second half "
            f"{fmt(part['gw_cpu_share_late_hold'] * 100, 0)} %"
        )
    if (after := part.get("rss_after_mb")) is not None:
        notes.append(f"RSS {fmt(after, 1)} MB {SETTLE_SECONDS:g} s after")
    return "; ".join(notes) or "-"


def verdict_table(found: Sequence[Verdict]) -> str:
    lines = ["| target | measured (medians) | verdict | caveat |", "|---|---|---|---|"]
    for v in found:
        lines.append(f"| {v.target} | {v.measured} | {v.status} | {v.caveat or '-'} |")
    return "\n".join(lines)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def code_line() -> str:
    """Which gateway code was measured: the commit, and whether moltbot/ had local changes
    (others work in the same tree, so a run may include their uncommitted work)."""
    import subprocess

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return ""
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    changed = [line for line in git("status", "--porcelain", "moltbot").splitlines() if line]
    extra = f" + {len(changed)} uncommitted changed/new files in moltbot/" if changed else ""
    return f"gateway code: commit {commit}{extra}"


def machine_line(bench: Bench) -> str:
    o = bench.options
    return (
        f"{os.cpu_count()} cores ({cpu_model()}), Linux {platform.release()}, "
        f"Python {platform.python_version()}; upstream: {o.upstream_workers} workers, "
        f"load generator: {o.load_workers} processes; {o.reps} repetitions; gateway log level: "
        f"{o.log_level or 'info (shipped default)'}; peak RSS: {bench.peak_rss_method}"
    )


def render(bench: Bench) -> str:
    from bench.scenarios import SCENARIOS

    titles = {s.key: s.title for s in SCENARIOS}
    summaries = summarise(bench.results)
    parts = [
        f"command: {' '.join(['python', '-m', 'bench', *sys.argv[1:]])}",
        f"machine: {machine_line(bench)}",
        code_line(),
        "",
        results_table(summaries, titles),
        "",
        ratio_table(summaries),
        "",
        workers_table(summaries),
        "",
        verdict_table(verdicts(summaries, bench.ws, bench.memory)),
    ]
    if bench.memory:
        parts[-1:-1] = [memory_table(bench.memory), ""]
    if bench.notes:
        parts += ["", *[f"note: {n}" for n in bench.notes]]
    return "\n".join(parts)


def save_json(bench: Bench, path: Path) -> None:
    summaries = summarise(bench.results)
    document = {
        "argv": sys.argv,
        "machine": machine_line(bench),
        "code": code_line(),
        "runs": [r.as_dict() for r in bench.results],
        "summaries": [asdict(s) for s in summaries.values()],
        "verdicts": [asdict(v) for v in verdicts(summaries, bench.ws, bench.memory)],
        "ws": bench.ws,
        "memory": bench.memory,
        "notes": bench.notes,
        "profiles": {k: str(v) for k, v in bench.profiles.items()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1, default=str))
