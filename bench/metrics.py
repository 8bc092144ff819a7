"""What one run measured, and the arithmetic on it (percentiles, medians, CPU shares)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

# A single-threaded process at this share of one core is treated as saturated: the run's
# numbers then say more about it than about the gateway.
SATURATED = 0.9
# Busy CPU outside our processes above this share of a core: someone else's work ran too.
FOREIGN = 0.25


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def median(values: Iterable[float]) -> float:
    present = [v for v in values if not math.isnan(v)]
    return statistics.median(present) if present else math.nan


@dataclass
class CpuWindow:
    """CPU seconds each process used in the measured window, and the window's length."""

    wall: float
    seconds: dict[str, float]  # process name -> CPU seconds

    def share(self, prefix: str) -> float:
        """The busiest process of that kind, as a fraction of one core."""
        shares = [s / self.wall for name, s in self.seconds.items() if name.startswith(prefix)]
        return max(shares, default=math.nan)

    def total(self) -> float:
        """CPU of the processes the bench started."""
        return sum(s for name, s in self.seconds.items() if name != "machine")

    def foreign(self) -> float:
        """Busy CPU nobody of ours accounts for (other work on the machine, and some of our
        own kernel network time), as a fraction of one core."""
        return max(0.0, self.seconds.get("machine", 0.0) - self.total()) / self.wall


@dataclass
class RunResult:
    scenario: str
    side: str
    rep: int
    completed: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    wall: float = math.nan
    rps: float = math.nan
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    ttft_p50_ms: float = math.nan
    ttft_p99_ms: float = math.nan
    gw_cpu_ms_per_req: float = math.nan
    gw_cpu_share: float = math.nan
    gw_peak_rss_mb: float = math.nan
    load_share: float = math.nan
    upstream_share: float = math.nan
    host_share: float = math.nan  # all bench processes' CPU over all cores
    foreign_share: float = math.nan  # machine CPU not ours, in cores
    sessions_stored: int | None = None
    log_bytes_per_req: float = math.nan
    db_cpu_ms_per_req: float = math.nan  # the PostgreSQL server's, where there is one
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def fill_latencies(result: RunResult, loads: Sequence[Mapping[str, Any]]) -> None:
    """Merge what the load workers reported into `result`."""
    latencies = [x for load in loads for x in load.get("latencies", [])]
    ttft = [x for load in loads for x in load.get("ttft", [])]
    result.completed = len(latencies)
    result.errors = sum(load.get("errors", 0) for load in loads)
    samples = [s for load in loads for s in load.get("error_samples", [])]
    fatal = [f"load generator: {load['fatal']}" for load in loads if "fatal" in load]
    result.error_samples = (fatal + samples)[:5]
    result.wall = max((load.get("wall", math.nan) for load in loads), default=math.nan)
    result.rps = result.completed / result.wall if result.wall > 0 else math.nan
    result.p50_ms = percentile(latencies, 0.50) * 1000
    result.p99_ms = percentile(latencies, 0.99) * 1000
    result.ttft_p50_ms = percentile(ttft, 0.50) * 1000
    result.ttft_p99_ms = percentile(ttft, 0.99) * 1000


def fill_cpu(result: RunResult, window: CpuWindow, ncpu: int) -> None:
    result.load_share = window.share("load")
    result.upstream_share = window.share("upstream")
    result.host_share = window.total() / (window.wall * ncpu)
    result.foreign_share = window.foreign()
    if result.side != "direct":
        gateway = window.seconds.get("target", math.nan)
        result.gw_cpu_share = gateway / window.wall
        result.gw_cpu_ms_per_req = gateway * 1000 / max(1, result.completed + result.errors)
    if "database" in window.seconds:
        database = window.seconds["database"]
        result.db_cpu_ms_per_req = database * 1000 / max(1, result.completed + result.errors)


def flags(result: RunResult) -> list[str]:
    """Why a run's figure may not be the gateway's."""
    found = []
    if result.load_share >= SATURATED:
        found.append("load generator saturated a core")
    if result.upstream_share >= SATURATED:
        found.append("upstream saturated a core")
    if result.host_share >= SATURATED:
        found.append("all cores busy")
    if result.foreign_share >= FOREIGN:
        found.append(f"other work on the machine ({result.foreign_share:.2f} of a core)")
    return found
