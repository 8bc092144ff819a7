"""Run `python -m moltbot ...` as a real process, the way systemd or a user would."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_env(state_dir: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A clean environment: no gateway variables from the developer's shell leak in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MOLTBOT_", "CLAWDBOT_"))}
    env.update(MOLTBOT_STATE_DIR=str(state_dir), HOME=str(state_dir.parent), PYTHONUNBUFFERED="1")
    env.update(extra or {})
    return env


def write_config(path: Path, config: Mapping[str, Any]) -> Path:
    path.write_text(json.dumps(config))
    return path


@dataclass
class GatewayProcess:
    process: asyncio.subprocess.Process
    url: str = ""
    stdout: list[str] = field(default_factory=list)
    log: list[dict[str, Any]] = field(default_factory=list)

    async def read_log_until(self, event: str, timeout: float = 20) -> dict[str, Any]:
        """Read stderr JSON log lines until one has this `event`."""
        async with asyncio.timeout(timeout):
            while True:
                line = await self.process.stderr.readline()  # type: ignore[union-attr]
                if not line:
                    raise AssertionError(f"gateway exited before logging {event!r}: {self.log}")
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                self.log.append(entry)
                if entry.get("event") == event:
                    return entry

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.process.returncode is None:
            self.process.send_signal(sig)
        async with asyncio.timeout(timeout):
            # Both pipes to their end: none is left for the garbage collector to close after
            # the test's loop has closed (an "Exception ignored" warning).
            rest, _ = await asyncio.gather(
                self.process.stderr.read(),  # type: ignore[union-attr]
                self.process.stdout.read(),  # type: ignore[union-attr]
            )
            code = await self.process.wait()
        self.log += [json.loads(line) for line in rest.splitlines() if line.startswith(b"{")]
        return code


@asynccontextmanager
async def gateway_process(
    args: list[str], env: Mapping[str, str], *, launcher: Sequence[str] = ("-m", "moltbot")
) -> AsyncIterator[GatewayProcess]:
    """Start the gateway and wait until it logs that it listens. `launcher`: what Python runs
    before `args` (e.g. `-c <code>` that restricts the process, then runs moltbot)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *launcher,
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env),
        cwd=REPO,
    )
    running = GatewayProcess(process)
    try:
        listening = await running.read_log_until("gateway listening")
        running.url = listening["url"]
        yield running
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def run_cli(args: list[str], env: Mapping[str, str], timeout: float = 30):
    """Run a short CLI command to completion; returns the CompletedProcess."""
    import subprocess

    return subprocess.run(
        [sys.executable, "-m", "moltbot", *args],
        env=dict(env),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
