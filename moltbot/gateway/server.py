"""The gateway process: one aiohttp application serving the WebSocket control plane and the HTTP
API on one port, and the start/stop sequence around it."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from aiohttp import web

from moltbot import __version__
from moltbot.agents.runtime import AgentRuntime
from moltbot.agents.store.factory import open_store
from moltbot.agents.store.records import SessionStoreError
from moltbot.config.model import AuthMode, Config
from moltbot.gateway.access_log import access_log_middleware
from moltbot.gateway.auth import Authenticator, is_loopback
from moltbot.gateway.connections import ConnectionGuard, GatewayRunner, raise_open_files_limit
from moltbot.gateway.errors import error_middleware
from moltbot.gateway.http.models import get_model, list_models
from moltbot.gateway.http.openai import chat_completions
from moltbot.gateway.http.responses import create_response, get_response
from moltbot.gateway.loop import EventLoopUnavailable
from moltbot.gateway.metrics import METRICS_KEY, Metrics, request_observer, setup_metrics
from moltbot.gateway.origins import (
    BROWSER_POLICY_KEY,
    BrowserPolicy,
    browser_policy_middleware,
)
from moltbot.gateway.readiness import READINESS_KEY, setup_readiness
from moltbot.gateway.state import AUTH_KEY, CONFIG_KEY, RUNTIME_KEY, STARTED_AT_KEY
from moltbot.gateway.systemd import notify
from moltbot.gateway.ui import ControlUi
from moltbot.gateway.ws import WsOptions, setup_ws
from moltbot.logs import get_logger
from moltbot.permissions import check_state_files
from moltbot.providers.failover import RetryPolicy
from moltbot.providers.registry import ProviderRegistry

log = get_logger("moltbot.gateway")


# The shortest shared secret the gateway starts with. A token is for programs (`moltbot setup`
# makes 32 random characters); a password is typed by people, so its minimum is lower, yet past
# what a short word list finds.
MIN_SECRET_CHARS: dict[AuthMode, int] = {"token": 16, "password": 12}


class StartupError(Exception):
    """The gateway must not start with this configuration."""


def startup_failure(config: Config, exc: Exception) -> str | None:
    """The one line to tell the user when starting failed with `exc`; None for a bug."""
    if isinstance(exc, StartupError | EventLoopUnavailable):
        return str(exc)
    if isinstance(exc, SessionStoreError):
        return f"cannot open the session store {config.session_store_location}: {exc}"
    if isinstance(exc, OSError):  # e.g. the port is taken
        gateway = config.gateway
        return f"cannot listen on {gateway.host}:{gateway.port}: {exc.strerror or exc}"
    return None


def check_startup(config: Config) -> None:
    """Refuse configurations that would expose an unauthenticated or weakly guarded gateway."""
    gateway = config.gateway
    mode = gateway.auth.mode
    what = "gateway.auth.token" if mode == "token" else "gateway.auth.password"
    env = "MOLTBOT_GATEWAY_TOKEN" if mode == "token" else "MOLTBOT_GATEWAY_PASSWORD"
    secret = gateway.auth.secret
    if secret:
        minimum = MIN_SECRET_CHARS[mode]
        if len(secret) < minimum:
            # Not the length it has: the message may end up in a log.
            raise StartupError(
                f"{what} is too short: at least {minimum} characters are required; "
                f"run `moltbot setup` for a random one, or set a longer {env}"
            )
        return
    if not is_loopback(gateway.host):
        raise StartupError(f"refusing to bind {gateway.host} without a {mode}: set {what} or {env}")
    raise StartupError(f"no {mode} configured: set {what} or {env}, or run `moltbot setup`")


def build_app(
    config: Config,
    *,
    retry_policy: RetryPolicy | None = None,
    ws_options: WsOptions | None = None,
) -> web.Application:
    metrics = Metrics()
    app = web.Application(
        # Host/Origin refusals are counted, logged and rendered like any other error.
        middlewares=[
            access_log_middleware(request_observer(metrics)),
            error_middleware,
            browser_policy_middleware,
        ],
        client_max_size=config.gateway.http.max_body_bytes,
    )
    app[CONFIG_KEY] = config
    app[METRICS_KEY] = metrics
    app[AUTH_KEY] = Authenticator(config.gateway.auth, config.gateway.trusted_proxies)
    app[BROWSER_POLICY_KEY] = BrowserPolicy(config.gateway)
    app.cleanup_ctx.append(_runtime_context(retry_policy))
    setup_readiness(app)  # first on_shutdown: not ready from the moment the stop begins
    app.on_shutdown.append(_begin_stop)
    app[STARTED_AT_KEY] = time.time()
    app.router.add_get("/healthz", healthz)
    ui = ControlUi(config.gateway.control_ui) if config.gateway.control_ui.enabled else None
    setup_ws(app, ws_options, root_page=ui.page if ui is not None and ui.at_root else None)
    if ui is not None:
        ui.add_routes(app)
    setup_metrics(app)
    add_openai_routes(app, config)
    return app


def add_openai_routes(app: web.Application, config: Config) -> None:
    """The OpenAI-compatible surface: each endpoint absent (404) unless enabled in the config,
    the model list with either."""
    http = config.gateway.http
    if http.chat_completions_enabled:
        app.router.add_post("/v1/chat/completions", chat_completions)
    if http.responses_enabled:
        app.router.add_post("/v1/responses", create_response)
        app.router.add_get("/v1/responses/{response_id}", get_response)
    if http.chat_completions_enabled or http.responses_enabled:
        app.router.add_get("/v1/models", list_models)
        app.router.add_get("/v1/models/{model_id:.+}", get_model)


def _runtime_context(
    retry_policy: RetryPolicy | None,
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def runtime_context(app: web.Application) -> AsyncIterator[None]:
        config = app[CONFIG_KEY]
        check_state_files(config)
        store = await open_store(config)
        providers = ProviderRegistry.from_config(config.models)
        if providers.uses_offline_default:
            log.warning("no model provider configured: using the offline builtin/echo model")
        runtime = AgentRuntime(
            config=config, store=store, providers=providers, retry_policy=retry_policy
        )
        app[RUNTIME_KEY] = runtime
        yield
        await runtime.close()

    return runtime_context


async def _begin_stop(app: web.Application) -> None:
    app[RUNTIME_KEY].begin_stop(app[CONFIG_KEY].gateway.shutdown_grace_seconds)


async def healthz(request: web.Request) -> web.Response:
    """Liveness for systemd and load balancers: no auth, nothing secret."""
    return web.json_response({"status": "ok", "version": __version__})


def make_runner(app: web.Application, config: Config) -> GatewayRunner:
    """The runner for `serve` and the tests alike: sockets capped and timed (connections.py)."""
    guard = ConnectionGuard(config.gateway.limits, app[AUTH_KEY].trusted_proxies)
    return GatewayRunner(
        app,
        guard,
        shutdown_timeout=config.gateway.shutdown_grace_seconds,
        handler_cancellation=True,  # a client that goes away cancels its handler and its run
        access_log=None,
    )


async def serve(
    config: Config,
    *,
    stop: asyncio.Event | None = None,
    loop_name: str = "asyncio",
    worker: WorkerLink | None = None,
) -> None:
    """Run the gateway until SIGTERM/SIGINT (or `stop` is set), then stop gracefully: stop
    accepting, let in-flight requests finish within the grace period, cancel the rest.

    As one of several workers (`worker`), it shares the port with the others (SO_REUSEPORT)
    and tells its parent, not systemd, that it listens."""
    check_startup(config)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    raise_open_files_limit(config.gateway.limits.max_connections)
    app = build_app(config)
    runner = make_runner(app, config)
    await runner.setup()
    try:
        site = web.TCPSite(
            runner, config.gateway.host, config.gateway.port, reuse_port=worker is not None
        )
        await site.start()
        host, port = runner.addresses[0][:2]
        url = f"http://{_url_host(host)}:{port}"
        if worker is None:
            log.info("gateway listening", url=url, version=__version__, loop=loop_name)
            notify("READY=1")
        else:
            log.info("worker listening", url=url, worker=worker.index, loop=loop_name)
            worker.listening(url)
        await stop.wait()
        if worker is None:
            notify("STOPPING=1")
        await _drain_delay(app, config.gateway.shutdown_delay_seconds)
        grace = config.gateway.shutdown_grace_seconds
        if worker is None:
            log.info("gateway stopping", grace_seconds=grace)
        else:
            log.info("worker stopping", worker=worker.index, grace_seconds=grace)
    finally:
        await runner.cleanup()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    if worker is None:
        log.info("gateway stopped")
    else:
        log.info("worker stopped", worker=worker.index)


class WorkerLink(Protocol):
    """How a worker process reports to the parent that started it."""

    index: int

    def listening(self, url: str) -> None: ...


async def _drain_delay(app: web.Application, seconds: float) -> None:
    """Not ready from now on, while still serving for `seconds`: load balancers polling
    /readyz move new traffic elsewhere before the port closes."""
    app[READINESS_KEY].begin_drain()
    if seconds > 0:
        log.info("gateway draining", delay_seconds=seconds)
        await asyncio.sleep(seconds)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
