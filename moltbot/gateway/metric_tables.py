"""Counters, histograms and gauges kept as plain dicts, exposed through prometheus-client.

The gateway updates its metrics from one event loop thread, for every request and every run
event. prometheus-client's own metric objects take a lock and check their labels on each
update (2–4 µs apiece here), so the hot path would pay for thread safety it does not need.
These tables cost a dict update per observation; `TableCollector` turns them into Prometheus
metric families only when scraped (also on the loop, so nothing changes under it).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

Labels = tuple[str, ...]


class CounterTable:
    def __init__(self, name: str, documentation: str, labels: Sequence[str]) -> None:
        self.name, self.documentation, self.labels = name, documentation, tuple(labels)
        self.values: defaultdict[Labels, float] = defaultdict(float)

    def inc(self, key: Labels, amount: float = 1.0) -> None:
        self.values[key] += amount

    def family(self) -> Metric:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        for key, value in self.values.items():
            family.add_metric(key, value)
        return family


class HistogramTable:
    def __init__(
        self, name: str, documentation: str, labels: Sequence[str], buckets: Sequence[float]
    ) -> None:
        self.name, self.documentation, self.labels = name, documentation, tuple(labels)
        self.bounds = tuple(sorted(buckets))
        # Per key: a count per bucket (not cumulative; the last is +Inf), then the sum.
        self.values: dict[Labels, list[float]] = {}

    def observe(self, key: Labels, value: float) -> None:
        entry = self.values.get(key)
        if entry is None:
            entry = self.values[key] = [0.0] * (len(self.bounds) + 2)
        entry[bisect_left(self.bounds, value)] += 1  # the first bucket with le >= value
        entry[-1] += value

    def family(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        for key, entry in self.values.items():
            buckets, total = [], 0.0
            for bound, count in zip((*self.bounds, float("inf")), entry[:-1], strict=True):
                total += count
                buckets.append((floatToGoString(bound), total))
            family.add_metric(key, buckets, sum_value=entry[-1])
        return family


class GaugeReading:
    """A gauge read when scraped."""

    def __init__(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        self.name, self.documentation, self.read = name, documentation, read

    def family(self) -> Metric:
        return GaugeMetricFamily(self.name, self.documentation, value=self.read())


class InfoTable:
    def __init__(self, name: str, documentation: str, value: dict[str, str]) -> None:
        self.name, self.documentation, self.value = name, documentation, dict(value)

    def family(self) -> Metric:
        return InfoMetricFamily(self.name, self.documentation, value=self.value)


Table = CounterTable | HistogramTable | GaugeReading | InfoTable


class TableCollector(Collector):
    def __init__(self, tables: Sequence[Table]) -> None:
        self._tables = tuple(tables)

    def collect(self) -> Iterator[Metric]:
        for table in self._tables:
            yield table.family()
