"""Prometheus metrics for one gateway, and `GET /metrics`.

Each app has its own `CollectorRegistry` under `METRICS_KEY` (tests run many gateways in one
process), fed from plain tables (metric_tables.py: a dict update per observation, no locks).
HTTP requests are counted by a middleware; runs are read off the runtime's event bus,
and `read_event` is the one function that knows what those events look like; gauges that are
cheaper to read than to track (open sockets, queued turns) are computed at scrape time.

No label carries a session key, a user or a secret: labels are route patterns, methods, status
codes, configured agent ids, model refs, provider names and error kinds, and every label that
takes values from the running gateway is capped at `LABEL_VALUES_MAX` distinct values.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, TypeVar

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from moltbot import __version__
from moltbot.agents.events import (
    AgentEvent,
    RunEnded,
    RunStarted,
    TextChunk,
    ToolCallChunk,
    UsageReport,
)
from moltbot.agents.runtime import AgentRuntime
from moltbot.agents.session_keys import agent_of_key
from moltbot.gateway.metric_tables import (
    CounterTable,
    GaugeReading,
    HistogramTable,
    InfoTable,
    Table,
    TableCollector,
)
from moltbot.gateway.state import AUTH_KEY, CONFIG_KEY, RUNTIME_KEY
from moltbot.gateway.ws.hub import HUB_KEY

T = TypeVar("T")

# Distinct values a label fed by the running gateway may take; later ones count as "other".
LABEL_VALUES_MAX = 100
# Runs followed at once (they are bounded by agents.defaults.maxConcurrent anyway).
MAX_TRACKED_RUNS = 10_000
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
MODEL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300, 600)
STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "unmatched"  # 404s: the raw path is the client's to choose, never a label


class BoundedLabel:
    """A label value as given while fewer than `limit` distinct values have been seen."""

    def __init__(self, limit: int = LABEL_VALUES_MAX) -> None:
        self._seen: set[str] = set()
        self._limit = limit

    def __call__(self, value: str | None) -> str:
        if value is None:
            return "none"
        if value not in self._seen:
            if len(self._seen) >= self._limit:
                return "other"
            self._seen.add(value)
        return value


class Metrics:
    """Every metric of one gateway. Gauges are read at scrape time through `readings`."""

    def __init__(self) -> None:
        self.http_requests = CounterTable(
            "moltbot_http_requests",
            "HTTP requests by route pattern, method and status (499: the client left first).",
            ("route", "method", "status"),
        )
        self.http_seconds = HistogramTable(
            "moltbot_http_request_duration_seconds",
            "HTTP request duration by route pattern, to the end of the response body "
            "(WebSocket upgrades are not timed).",
            ("route",),
            HTTP_BUCKETS,
        )
        self.runs = CounterTable(
            "moltbot_runs",
            "Runs ended, by agent and status (ok, error, aborted).",
            ("agent", "status"),
        )
        self.run_seconds = HistogramTable(
            "moltbot_run_duration_seconds",
            "From a run getting its slot to its end.",
            ("agent",),
            MODEL_BUCKETS,
        )
        self.first_token_seconds = HistogramTable(
            "moltbot_time_to_first_token_seconds",
            "From a run getting its slot to its first text.",
            ("agent", "model"),
            MODEL_BUCKETS,
        )
        self.upstream_calls = CounterTable(
            "moltbot_upstream_calls",
            "Runs sent to a model provider (retries and fallbacks within a run count once), by "
            "the provider that answered or, when none did, the first one tried.",
            ("provider",),
        )
        self.upstream_errors = CounterTable(
            "moltbot_upstream_errors",
            "Runs that ended in an error, by provider (none: no model was reached) and kind.",
            ("provider", "kind"),
        )
        self.tokens = CounterTable(
            "moltbot_tokens",
            "Tokens the models reported, by agent, model ref and direction (in: the prompt, "
            "cached tokens included; out).",
            ("agent", "model", "direction"),
        )
        self.store_seconds = HistogramTable(
            "moltbot_store_operation_duration_seconds",
            "Session store calls timed by the gateway, by operation.",
            ("operation",),
            STORE_BUCKETS,
        )
        self.store_errors = CounterTable(
            "moltbot_store_errors",
            "Session store calls timed by the gateway that failed, by operation.",
            ("operation",),
        )
        # Set by setup_metrics once the hub and the runtime exist.
        self.ws_connections: Callable[[], float] = lambda: 0
        self.runs_active: Callable[[], float] = lambda: 0
        self.turns_queued: Callable[[], float] = lambda: 0
        self.agent_label = BoundedLabel()
        self.model_label = BoundedLabel()
        self.provider_label = BoundedLabel()
        self.kind_label = BoundedLabel()
        self.registry = CollectorRegistry()
        self.registry.register(TableCollector(self._tables()))

    def _tables(self) -> list[Table]:
        return [
            InfoTable("moltbot_build", "The gateway's version.", {"version": __version__}),
            self.http_requests,
            self.http_seconds,
            GaugeReading(
                "moltbot_ws_connections",
                "Open WebSocket connections past their handshake.",
                lambda: self.ws_connections(),
            ),
            GaugeReading(
                "moltbot_runs_active", "Runs that hold a run slot now.", lambda: self.runs_active()
            ),
            GaugeReading(
                "moltbot_turns_queued",
                "Turns accepted and waiting for a run slot.",
                lambda: self.turns_queued(),
            ),
            self.runs,
            self.run_seconds,
            self.first_token_seconds,
            self.upstream_calls,
            self.upstream_errors,
            self.tokens,
            self.store_seconds,
            self.store_errors,
        ]

    async def timed_store_call(self, operation: str, call: Awaitable[T]) -> T:
        """Await a session store call and record its latency (the hook for store metrics:
        the readiness check uses it; a store wrapper can too)."""
        started = time.perf_counter()
        try:
            return await call
        except Exception:
            self.store_errors.inc((operation,))
            raise
        finally:
            self.store_seconds.observe((operation,), time.perf_counter() - started)


METRICS_KEY = web.AppKey("metrics", Metrics)


# -- HTTP ---------------------------------------------------------------------------------------


def request_observer(metrics: Metrics) -> Callable[[web.Request, int, float], None]:
    """Counts and times a finished request (two dict updates); the access-log middleware,
    which already times every request, calls it, so a request is timed once."""
    requests, seconds = metrics.http_requests, metrics.http_seconds

    def observe(request: web.Request, status: int, elapsed: float) -> None:
        route = route_label(request)
        method = request.method if request.method in METHODS else "other"
        requests.inc((route, method, str(status)))
        if status != 101:  # a WebSocket's "request" lasts as long as the socket
            seconds.observe((route,), elapsed)

    return observe


def route_label(request: web.Request) -> str:
    """The pattern of the route that matched (`/v1/models/{model_id}`), never the raw path."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED_ROUTE


async def metrics_endpoint(request: web.Request) -> web.Response:
    """Prometheus text format; the gateway token is needed unless `gateway.metrics.public`."""
    app = request.app
    if not app[CONFIG_KEY].gateway.metrics.public:
        app[AUTH_KEY].check_request(request)
    body = generate_latest(app[METRICS_KEY].registry)
    return web.Response(
        body=body, headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"}
    )


# -- runs, from the runtime's event bus ---------------------------------------------------------


class Seen(NamedTuple):
    """What metrics need from one runtime event (a tuple: one is made per text delta)."""

    what: Literal["start", "text", "usage", "end"]
    run_id: str
    session_key: str
    status: str | None = None  # end: "ok", "error" or "aborted"
    error_kind: str | None = None
    model: str | None = None  # "provider/model", when the event says
    tokens: tuple[int, int] | None = None  # usage: (in, out)


def read_event(event: AgentEvent) -> Seen | None:
    """The one place that knows the shape of the runtime's events (moltbot/agents/events.py)."""
    item = event.item
    if isinstance(item, TextChunk | ToolCallChunk):  # a tool call is output too
        return Seen("text", event.run_id, event.session_key)
    if isinstance(item, UsageReport):
        tokens = (item.usage.prompt_tokens, item.usage.output_tokens)
        return Seen("usage", event.run_id, event.session_key, tokens=tokens)
    if isinstance(item, RunStarted):
        return Seen("start", event.run_id, event.session_key)
    if isinstance(item, RunEnded):
        kind = (item.error_kind or "unknown") if item.status == "error" else None
        return Seen("end", event.run_id, event.session_key, item.status, kind, item.model)
    return None


@dataclass(slots=True)
class _Run:
    agent: str
    started: float  # perf_counter() when the run got its slot
    first_text: bool = False
    tokens: tuple[int, int] | None = None


class RunObserver:
    """A bus listener: called synchronously for every event of every run, so it stays small."""

    def __init__(self, metrics: Metrics, runtime: AgentRuntime) -> None:
        self._metrics = metrics
        self._runtime = runtime
        self._agents = frozenset(agent.id for agent in runtime.agents)
        self._runs: dict[str, _Run] = {}  # started and not ended, oldest first

    @property
    def running(self) -> int:
        return len(self._runs)

    @property
    def queued(self) -> int:
        return max(0, len(self._runtime.active_runs()) - len(self._runs))

    def __call__(self, event: AgentEvent) -> None:
        seen = read_event(event)
        if seen is None:
            return
        if seen.what == "text":
            run = self._runs.get(seen.run_id)
            if run is not None and not run.first_text:
                run.first_text = True
                model = self._metrics.model_label(self._model_of(seen))
                elapsed = time.perf_counter() - run.started
                self._metrics.first_token_seconds.observe((run.agent, model), elapsed)
        elif seen.what == "start":
            self._runs[seen.run_id] = _Run(self._agent_of(seen), time.perf_counter())
            if len(self._runs) > MAX_TRACKED_RUNS:
                del self._runs[next(iter(self._runs))]
        elif seen.what == "usage":
            if (run := self._runs.get(seen.run_id)) is not None:
                run.tokens = seen.tokens
        else:
            self._ended(seen, self._runs.pop(seen.run_id, None))

    def _ended(self, seen: Seen, run: _Run | None) -> None:
        metrics = self._metrics
        agent = run.agent if run is not None else self._agent_of(seen)
        metrics.runs.inc((agent, seen.status or "unknown"))
        model = self._model_of(seen)
        provider = metrics.provider_label(model.partition("/")[0] if model else None)
        if run is not None:  # it had a slot, so it went to a model
            metrics.run_seconds.observe((agent,), time.perf_counter() - run.started)
            metrics.upstream_calls.inc((provider,))
        if seen.status == "error":
            reached = provider if run is not None else "none"
            metrics.upstream_errors.inc((reached, metrics.kind_label(seen.error_kind)))
        if run is not None and run.tokens is not None:
            model_label = metrics.model_label(model)
            metrics.tokens.inc((agent, model_label, "in"), run.tokens[0])
            metrics.tokens.inc((agent, model_label, "out"), run.tokens[1])

    def _agent_of(self, seen: Seen) -> str:
        run = self._runtime.get_run(seen.run_id)  # the run's own agent, not a parsed key
        agent = run.agent.id if run is not None else agent_of_key(seen.session_key)
        return agent if agent in self._agents else "other"

    def _model_of(self, seen: Seen) -> str | None:
        """The event's model, else the run's: the ref that answered, or the first to try."""
        if seen.model:
            return seen.model
        run = self._runtime.get_run(seen.run_id)
        if run is None:
            return None
        refs = run.agent.model_refs or (self._runtime.providers.default_ref(),)
        return run.model_ref or refs[0]


# -- wiring -------------------------------------------------------------------------------------


def setup_metrics(app: web.Application) -> None:
    """Route, gauges and the bus listener. Call after `setup_ws` (the socket gauge reads the
    hub) and after the runtime's cleanup_ctx is registered."""
    metrics = app[METRICS_KEY]
    hub = app[HUB_KEY]
    metrics.ws_connections = lambda: len(hub.connections)
    app.router.add_get("/metrics", metrics_endpoint)
    unsubscribe: list[Callable[[], Any]] = []

    async def watch(app: web.Application) -> None:
        runtime = app[RUNTIME_KEY]
        observer = RunObserver(metrics, runtime)
        metrics.runs_active = lambda: observer.running
        metrics.turns_queued = lambda: observer.queued
        unsubscribe.append(runtime.bus.subscribe(observer))

    async def unwatch(app: web.Application) -> None:
        while unsubscribe:
            unsubscribe.pop()()

    app.on_startup.append(watch)
    app.on_cleanup.append(unwatch)
