"""The lock-free metric tables render as prometheus-client's own parser reads them back."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from moltbot.gateway.metric_tables import (
    CounterTable,
    GaugeReading,
    HistogramTable,
    TableCollector,
)


def render(*tables: object) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(TableCollector(tables))  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_histogram_buckets_are_cumulative_and_le_inclusive() -> None:
    table = HistogramTable("t_seconds", "test", ("route",), (1, 2))
    for value in (1, 1.5, 5):
        table.observe(("/x",), value)
    samples = render(table)
    bucket = "t_seconds_bucket"
    assert samples[(bucket, (("le", "1.0"), ("route", "/x")))] == 1  # 1 <= 1
    assert samples[(bucket, (("le", "2.0"), ("route", "/x")))] == 2
    assert samples[(bucket, (("le", "+Inf"), ("route", "/x")))] == 3
    assert samples[("t_seconds_count", (("route", "/x"),))] == 3
    assert samples[("t_seconds_sum", (("route", "/x"),))] == 7.5


def test_counters_add_per_label_set_and_gauges_are_read_when_scraped() -> None:
    counter = CounterTable("t_requests", "test", ("status",))
    counter.inc(("200",))
    counter.inc(("200",), 2)
    counter.inc(("404",))
    level = [3.0]
    gauge = GaugeReading("t_level", "test", lambda: level[0])
    assert render(counter, gauge)[("t_requests_total", (("status", "200"),))] == 3
    level[0] = 5
    samples = render(counter, gauge)
    assert samples[("t_requests_total", (("status", "404"),))] == 1
    assert samples[("t_level", ())] == 5
