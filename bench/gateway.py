"""The gateway under test: its generated config and the real `python -m moltbot gateway`.

Its stderr (JSON log lines, one per request at the shipped `info` level) goes to a file, so a
full pipe can never stall it; the runner learns the URL from the `gateway listening` line.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.procs import Child, Children

PROVIDER = "bench"
# agent id -> upstream model id; the scenarios name agents as `moltbot/<agent>`.
AGENT_MODELS = {"fast": "fast", "s16": "chunks16", "s16d20": "chunks16-delay20"}
START_TIMEOUT = 30.0


@dataclass(frozen=True)
class GatewaySetup:
    state_dir: Path
    config_path: Path
    log_path: Path
    store_path: Path
    port: int
    token: str


def new_setup(root: Path, name: str, port: int, store_path: Path | None = None) -> GatewaySetup:
    state = root / name
    state.mkdir(parents=True, exist_ok=True)
    return GatewaySetup(
        state_dir=state,
        config_path=state / "moltbot.json",
        log_path=state / "gateway.log",
        store_path=store_path or state / "sessions.sqlite",
        port=port,
        token=secrets.token_urlsafe(24),
    )


def gateway_config(
    setup: GatewaySetup,
    upstream_port: int | None,
    log_level: str | None,
    pg_dsn: str | None = None,
    pg_sync: str = "off",
) -> dict:
    """Token auth, the chat endpoint on, one provider (the bench upstream), one agent per
    upstream model. maxConcurrent is raised for the concurrency-200 scenario and the
    connection caps for the 1,000 idle WebSockets; the log level stays the shipped default
    unless asked otherwise. Without an upstream port: no provider and no agents list, so the
    default agent answers with the offline `builtin/echo` model. With `pg_dsn`, sessions go to
    that PostgreSQL database; its pool is sized for the scenarios' 32 connections (each stored
    turn holds a connection while it runs)."""
    workspace = setup.state_dir / "workspace"
    workspace.mkdir(exist_ok=True)
    defaults: dict[str, Any] = {
        "workspace": str(workspace),
        "userTimezone": "UTC",
        "timeoutSeconds": 120,
        "maxConcurrent": 512,
    }
    config: dict[str, Any] = {
        "gateway": {
            "port": setup.port,
            "bind": "loopback",
            "auth": {"mode": "token", "token": setup.token},
            "http": {"endpoints": {"chatCompletions": {"enabled": True}}},
            # Scenario (f) holds 1,000 WebSockets from 127.0.0.1, over the default caps.
            "limits": {"maxConnections": 4096, "maxConnectionsPerIp": 4096},
            "shutdownGraceSeconds": 3,
        },
        "agents": {"defaults": defaults},
        "session": {"store": str(setup.store_path)},
    }
    if upstream_port is not None:
        config["models"] = {
            "providers": {
                PROVIDER: {
                    "baseUrl": f"http://127.0.0.1:{upstream_port}/v1",
                    "api": "openai-completions",
                    "models": [{"id": model, "name": model} for model in AGENT_MODELS.values()],
                }
            }
        }
        defaults["model"] = {"primary": f"{PROVIDER}/fast", "fallbacks": []}
        agents = [
            {"id": agent, "model": {"primary": f"{PROVIDER}/{model}", "fallbacks": []}}
            for agent, model in AGENT_MODELS.items()
        ]
        agents[0]["default"] = True
        config["agents"]["list"] = agents
    if pg_dsn is not None:
        # synchronous_commit=off: the durability SQLite's synchronous=NORMAL gives the other
        # side (a committed turn survives the gateway's crash, not the database server's).
        dsn = f"{pg_dsn}?synchronous_commit=off" if pg_sync == "off" else pg_dsn
        store = {"backend": "postgres", "dsn": dsn, "pool": {"min": 4, "max": 40}}
        config["session"] = {"store": store}
    if log_level is not None:
        config["logging"] = {"level": log_level}
    return config


def gateway_env(setup: GatewaySetup) -> dict[str, str]:
    """No MOLTBOT_*/CLAWDBOT_* from the caller's shell; state and HOME inside the run dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MOLTBOT_", "CLAWDBOT_"))}
    env.update(MOLTBOT_STATE_DIR=str(setup.state_dir), HOME=str(setup.state_dir))
    return env


@dataclass
class Gateway:
    child: Child
    setup: GatewaySetup
    url: str
    worker_pids: tuple[int, ...] = ()  # with --workers: the processes that serve

    @property
    def pid(self) -> int:
        return self.child.pid

    @property
    def pids(self) -> tuple[int, ...]:
        """Every process of this gateway (the parent and its workers)."""
        return (self.child.pid, *self.worker_pids)


async def start_gateway(
    kids: Children,
    setup: GatewaySetup,
    upstream_port: int | None,
    log_level: str | None,
    *,
    workers: int = 1,
    pg_dsn: str | None = None,
    pg_sync: str = "off",
) -> Gateway:
    config = gateway_config(setup, upstream_port, log_level, pg_dsn, pg_sync)
    setup.config_path.write_text(json.dumps(config))
    extra = ["--workers", str(workers)] if workers > 1 else []
    log = setup.log_path.open("ab")
    try:
        child = await kids.start_python(
            "gateway",
            [
                "moltbot",
                "gateway",
                "--config",
                str(setup.config_path),
                "--port",
                str(setup.port),
                *extra,
            ],
            env=gateway_env(setup),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    finally:
        log.close()  # the child has its own copy of the descriptor
    url = await wait_until_listening(child, setup.log_path, setup.port)
    if workers == 1:
        return Gateway(child, setup, url)
    async with asyncio.timeout(START_TIMEOUT):  # one worker may answer before all listen
        while (listening := listening_entry(setup.log_path)) is None:  # noqa: ASYNC110 (a file)
            await asyncio.sleep(0.05)
    return Gateway(child, setup, str(listening["url"]), tuple(listening["pids"]))


async def wait_until_listening(child: Child, log_path: Path, port: int) -> str:
    """The URL from the `gateway listening` log line; at a log level that hides it, the first
    `GET /healthz` that answers 200. Fails if the gateway exits first."""
    async with asyncio.timeout(START_TIMEOUT):
        while True:
            url = listening_url(log_path)
            if url is not None:
                return url
            if await healthy(port):
                return f"http://127.0.0.1:{port}"
            if not child.running:
                tail = log_path.read_bytes()[-2000:].decode(errors="replace")  # noqa: ASYNC240
                raise RuntimeError(f"gateway exited ({child.process.returncode}): {tail}")
            await asyncio.sleep(0.05)


async def healthy(port: int) -> bool:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        status = await asyncio.wait_for(reader.readline(), 2)
        return status.startswith(b"HTTP/1.1 200")
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()


def listening_url(log_path: Path) -> str | None:
    """The URL from the `gateway listening` log line, once it is there (the log is tiny)."""
    entry = listening_entry(log_path)
    return None if entry is None else str(entry["url"])


def listening_entry(log_path: Path) -> dict[str, Any] | None:
    for line in log_path.read_text(errors="replace").splitlines():
        entry = _json_line(line)
        if entry.get("event") == "gateway listening":
            return entry
    return None


def _json_line(line: str) -> dict[str, Any]:
    if not line.startswith("{"):
        return {}
    try:
        entry = json.loads(line)
    except ValueError:
        return {}
    return entry if isinstance(entry, dict) else {}
