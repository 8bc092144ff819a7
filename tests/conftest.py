"""Shared fixtures: configs built in code, and a real gateway on a loopback port."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import openai
import pytest
from aiohttp import web

from moltbot.agents.runtime import AgentRuntime
from moltbot.config.model import (
    AgentConfig,
    AgentDefaults,
    AgentsConfig,
    AuthConfig,
    Config,
    GatewayConfig,
    HttpConfig,
    ModelChoice,
    ModelsConfig,
    ProviderConfig,
    RateLimitConfig,
    ToolRules,
    ToolsConfig,
)
from moltbot.gateway.server import build_app, make_runner
from moltbot.gateway.state import RUNTIME_KEY
from moltbot.providers.failover import RetryPolicy

TOKEN = "test-token-5f3a9c2e"
# Retries in tests wait milliseconds, not seconds.
FAST_RETRIES = RetryPolicy(max_retries=2, base_delay=0.01, max_delay=0.05)


def make_config(
    state_dir: Path,
    *,
    token: str | None = TOKEN,
    chat: bool = True,
    providers: tuple[ProviderConfig, ...] = (),
    agents: tuple[AgentConfig, ...] = (),
    primary: str | None = None,
    fallbacks: tuple[str, ...] | None = None,
    rate_limit: RateLimitConfig | None = None,
    tools: ToolsConfig | None = None,
    **overrides: Any,
) -> Config:
    """A complete Config in code. `overrides` go to GatewayConfig or AgentDefaults by name;
    `tools` defaults to a fresh config's (the agent's file tools)."""
    gateway_fields = {f.name for f in dataclasses.fields(GatewayConfig)}
    gateway_kw = {k: v for k, v in overrides.items() if k in gateway_fields}
    defaults_kw = {k: v for k, v in overrides.items() if k not in gateway_fields}
    auth = AuthConfig(token=token, rate_limit=rate_limit or RateLimitConfig())
    gateway_kw.setdefault("http", HttpConfig(chat_completions_enabled=chat))
    return Config(
        gateway=GatewayConfig(auth=auth, **gateway_kw),
        models=ModelsConfig(providers=providers),
        agents=AgentsConfig(
            defaults=AgentDefaults(model=ModelChoice(primary, fallbacks), **defaults_kw),
            list=agents,
        ),
        tools=tools or ToolsConfig(),
        state_dir=state_dir,
    )


# For tests of client tools: the agent offers none of its own, so what reaches the model is
# exactly what the client sent.
NO_AGENT_TOOLS = ToolsConfig(rules=ToolRules(deny=("*",)))


@dataclass
class Gateway:
    """A gateway serving on 127.0.0.1 for one test."""

    app: web.Application
    runner: web.AppRunner
    url: str
    config: Config

    @property
    def runtime(self) -> AgentRuntime:
        return self.app[RUNTIME_KEY]

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://")

    def headers(self, token: str | None = TOKEN, **extra: str) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        headers.update(extra)
        return headers

    def openai(self, **kwargs: Any) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=f"{self.url}/v1", api_key=TOKEN, max_retries=0, timeout=30, **kwargs
        )

    def openai_sync(self, **kwargs: Any) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.url}/v1", api_key=TOKEN, max_retries=0, timeout=30, **kwargs
        )

    async def stop(self) -> None:
        if self.runner.server is not None:
            await self.runner.cleanup()


StartGateway = Callable[..., Awaitable[Gateway]]
ServeApp = Callable[[web.Application, Config], Awaitable[Gateway]]


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir()
    return path


@pytest.fixture
async def serve_app() -> AsyncIterator[ServeApp]:
    """Serve an app built by `build_app` (and perhaps adjusted by the test) on 127.0.0.1, the
    way `moltbot gateway` does; stopped at the end of the test."""
    started: list[Gateway] = []

    async def serve(app: web.Application, config: Config) -> Gateway:
        runner = make_runner(app, config)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        gateway = Gateway(app, runner, f"http://127.0.0.1:{runner.addresses[0][1]}", config)
        started.append(gateway)
        return gateway

    yield serve
    for gateway in reversed(started):
        await gateway.stop()


@pytest.fixture
def start_gateway(serve_app: ServeApp) -> StartGateway:
    async def start(config: Config, *, retry_policy: RetryPolicy = FAST_RETRIES) -> Gateway:
        return await serve_app(build_app(config, retry_policy=retry_policy), config)

    return start


# -- PostgreSQL -------------------------------------------------------------------------------
# One fresh database per test run (dropped at the end), one fresh schema per test in it. The
# server is the machine's (127.0.0.1:5432, user postgres, trust auth), or MOLTBOT_TEST_PG_DSN.

PG_ADMIN_DSN = os.environ.get(
    "MOLTBOT_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
PG_CONNECT_TIMEOUT = 5.0


def pg_execute(dsn: str, statement: str) -> None:
    """Run one statement on its own connection, from sync code or from inside a running loop
    (a thread of its own runs the client)."""

    async def run() -> None:
        conn = await asyncpg.connect(dsn, timeout=PG_CONNECT_TIMEOUT)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    with concurrent.futures.ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, run()).result()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """The DSN of a database made for this test run; skips when no server answers."""
    name = f"moltbot_test_{secrets.token_hex(6)}"
    try:
        pg_execute(PG_ADMIN_DSN, f"CREATE DATABASE {name}")
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        pytest.skip(f"PostgreSQL not reachable at {_shown(PG_ADMIN_DSN)} ({exc}): skipping")
    base = PG_ADMIN_DSN.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        pg_execute(PG_ADMIN_DSN, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _shown(dsn: str) -> str:
    return dsn.rpartition("@")[2]


@pytest.fixture
def pg_dsn(pg_database: str) -> str:
    """A DSN whose tables live in a schema of their own (asyncpg passes `search_path` on)."""
    schema = f"t_{secrets.token_hex(6)}"
    pg_execute(pg_database, f"CREATE SCHEMA {schema}")
    return f"{pg_database}?search_path={schema}"
