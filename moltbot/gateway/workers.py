"""`moltbot gateway --workers N`: one parent process and N worker processes on one port.

Each worker is a whole gateway (`serve`) in its own process, listening with SO_REUSEPORT, so
the kernel spreads connections over them. The parent serves nothing: it starts the workers,
tells systemd READY=1 once every one of them reports (over a pipe) that it listens, restarts a
worker that dies (with a growing delay, and gives up after too many deaths in a short while),
and on SIGTERM/SIGINT passes the signal on and waits for all of them to drain.

Workers share nothing but the port and the session store, which must therefore be PostgreSQL
(the config refuses more than one worker on SQLite).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import multiprocessing
import os
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import structlog

from moltbot.config.model import Config, LogFormat, LogLevel
from moltbot.gateway import loop as event_loop
from moltbot.gateway.server import StartupError, serve, startup_failure
from moltbot.gateway.systemd import notify
from moltbot.logs import configure_logging, get_logger

log = get_logger("moltbot.gateway")

# A new worker must report that it listens within this.
WORKER_START_SECONDS = 60.0
# More deaths than this of one worker within the window: something is wrong beyond one
# process, so the gateway stops (exit 1) and leaves the next step to systemd.
MAX_RESTARTS = 5
RESTART_WINDOW_SECONDS = 60.0
BACKOFF_FIRST_SECONDS, BACKOFF_MAX_SECONDS = 0.5, 10.0
# Beyond the grace period: the runtime's own wait for aborted runs and closing the store.
STOP_MARGIN_SECONDS = 10.0
EXIT_GAVE_UP = 1

PR_SET_PDEATHSIG = 1


# -- the worker's side ---------------------------------------------------------------------


@dataclass
class PipeLink:
    """A worker's line to its parent: one message when it listens, or why it could not."""

    index: int
    conn: Connection

    def listening(self, url: str) -> None:
        self.conn.send(("listening", url))

    def failed(self, message: str) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(("error", message))


def worker_main(
    config: Config, index: int, conn: Connection, level: LogLevel, fmt: LogFormat
) -> None:
    """A worker process's entry point (multiprocessing, spawn)."""
    _die_with_parent()
    configure_logging(level, fmt)
    structlog.contextvars.bind_contextvars(worker=index)
    link = PipeLink(index, conn)

    async def main(loop_name: str) -> None:
        await serve(config, loop_name=loop_name, worker=link)

    try:
        event_loop.run(main, config.gateway.event_loop)
    except Exception as exc:
        message = startup_failure(config, exc)
        if message is None:
            raise
        link.failed(message)
        sys.exit(2)


def _die_with_parent() -> None:
    """SIGTERM this worker when the parent dies, even by kill -9: no orphan keeps the port."""
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


# -- the parent's side ---------------------------------------------------------------------


class WorkerFailed(Exception):
    """A worker stopped before it listened; the message says why if it could tell."""


@dataclass
class Slot:
    """One worker position: the process filling it now, and its recent deaths."""

    index: int
    process: BaseProcess | None = None
    ready: asyncio.Future[str] | None = None
    deaths: deque[float] = field(default_factory=deque)


class Supervisor:
    def __init__(self, config: Config, level: LogLevel, fmt: LogFormat) -> None:
        self._config = config
        self._level, self._format = level, fmt
        self._context = multiprocessing.get_context("spawn")
        self._slots = [Slot(i) for i in range(config.gateway.workers)]
        self._stop = asyncio.Event()
        self._gave_up = False

    async def run(self) -> int:
        """Start the workers, supervise them until a stop signal, stop them. The exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        try:
            with reserve_port(self._config) as port:
                self._config = _with_port(self._config, port)
                return await self._supervise()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    async def _supervise(self) -> int:
        try:
            urls = await self._start_all()
        except WorkerFailed as exc:
            await self._stop_all()
            raise StartupError(str(exc)) from None
        if urls is None:  # stopped while starting
            await self._stop_all()
            return 0
        pids = [slot.process.pid for slot in self._slots if slot.process]
        log.info("gateway listening", url=urls[0], workers=len(urls), pids=pids)
        notify("READY=1")
        watchers = [asyncio.create_task(self._watch(slot)) for slot in self._slots]
        await self._stop.wait()
        grace = self._config.gateway.shutdown_grace_seconds
        log.info("gateway stopping", grace_seconds=grace, workers=len(self._slots))
        notify("STOPPING=1")
        for task in watchers:
            task.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        await self._stop_all()
        log.info("gateway stopped")
        return EXIT_GAVE_UP if self._gave_up else 0

    async def _start_all(self) -> list[str] | None:
        """Every worker's URL once all listen; None if a stop signal came first."""
        for slot in self._slots:
            self._spawn(slot)
        ready = [asyncio.create_task(self._wait_ready(slot)) for slot in self._slots]
        stopping = asyncio.create_task(self._stop.wait())
        try:
            pending: set[asyncio.Task[Any]] = {*ready, stopping}
            while stopping in pending and any(task in pending for task in ready):
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done & set(ready):
                    task.result()  # the first worker that failed stops the start-up
        finally:
            for task in [*ready, stopping]:
                task.cancel()
            await asyncio.gather(*ready, stopping, return_exceptions=True)
        if self._stop.is_set():
            return None
        return [task.result() for task in ready]

    def _spawn(self, slot: Slot) -> None:
        loop = asyncio.get_running_loop()
        reader, writer = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=worker_main,
            args=(self._config, slot.index, writer, self._level, self._format),
            name=f"moltbot-worker-{slot.index}",
        )
        process.start()
        writer.close()  # the child holds its own copy; EOF here means it is gone
        ready: asyncio.Future[str] = loop.create_future()
        # Marked as seen: a worker may fail after nobody waits for it any more (stopping).
        ready.add_done_callback(lambda done: done.cancelled() or done.exception())
        slot.process, slot.ready = process, ready

        def on_message() -> None:
            try:
                kind, value = reader.recv()
            except (EOFError, OSError):
                loop.remove_reader(reader.fileno())
                reader.close()
                if not ready.done():
                    ready.set_exception(WorkerFailed(f"worker {slot.index} exited at start-up"))
                return
            if ready.done():
                return
            if kind == "listening":
                ready.set_result(value)
            else:
                ready.set_exception(WorkerFailed(value))

        loop.add_reader(reader.fileno(), on_message)

    async def _wait_ready(self, slot: Slot) -> str:
        assert slot.ready is not None
        try:
            async with asyncio.timeout(WORKER_START_SECONDS):
                return await asyncio.shield(slot.ready)
        except TimeoutError:
            raise WorkerFailed(
                f"worker {slot.index} did not listen within {WORKER_START_SECONDS:g} s"
            ) from None

    async def _watch(self, slot: Slot) -> None:
        """Restart the slot's worker whenever it dies, with a growing delay."""
        while True:
            assert slot.process is not None
            await _exited(slot.process)
            now = time.monotonic()
            log.warning("worker exited", worker=slot.index, code=slot.process.exitcode)
            while slot.deaths and slot.deaths[0] < now - RESTART_WINDOW_SECONDS:
                slot.deaths.popleft()
            if len(slot.deaths) >= MAX_RESTARTS:
                log.error(
                    "worker keeps dying; stopping the gateway",
                    worker=slot.index,
                    deaths=len(slot.deaths) + 1,
                    window_seconds=RESTART_WINDOW_SECONDS,
                )
                self._gave_up = True
                self._stop.set()
                return
            delay = min(BACKOFF_MAX_SECONDS, BACKOFF_FIRST_SECONDS * 2 ** len(slot.deaths))
            slot.deaths.append(now)
            await asyncio.sleep(delay)
            self._spawn(slot)
            try:
                await self._wait_ready(slot)
            except WorkerFailed as exc:
                log.error("worker restart failed", worker=slot.index, error=str(exc))
                _kill(slot.process)
                continue
            log.info("worker restarted", worker=slot.index, pid=slot.process.pid)

    async def _stop_all(self) -> None:
        """SIGTERM every worker; they drain within the grace period. Kill what is left."""
        processes = [s.process for s in self._slots if s.process and s.process.is_alive()]
        for process in processes:
            with contextlib.suppress(ProcessLookupError, TypeError):
                os.kill(process.pid, signal.SIGTERM)  # type: ignore[arg-type]
        limit = self._config.gateway.shutdown_grace_seconds + STOP_MARGIN_SECONDS
        waits = [asyncio.create_task(_exited(p)) for p in processes]
        if waits:
            _, late = await asyncio.wait(waits, timeout=limit)
            for task in late:
                task.cancel()
        for process in processes:
            if process.is_alive():
                log.warning("worker did not stop in time; killing it", pid=process.pid)
                _kill(process)
            process.join(timeout=5)


async def _exited(process: BaseProcess) -> None:
    """Wait for `process` to end, without blocking the loop (its sentinel becomes readable)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    sentinel = process.sentinel
    loop.add_reader(sentinel, lambda: done.done() or done.set_result(None))
    try:
        await done
    finally:
        loop.remove_reader(sentinel)
    process.join(timeout=5)


def _kill(process: BaseProcess) -> None:
    if process.is_alive():
        process.kill()
        process.join(timeout=5)


@contextlib.contextmanager
def reserve_port(config: Config) -> Iterator[int]:
    """Bind (without listening) the address the workers will share, for as long as the parent
    runs: a taken port fails here, once, with a clear error, and port 0 becomes one real port
    for all the workers."""
    host, port = config.gateway.host, config.gateway.port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        yield sock.getsockname()[1]
    finally:
        sock.close()


def _with_port(config: Config, port: int) -> Config:
    return replace(config, gateway=replace(config.gateway, port=port))


def supervise(config: Config, level: LogLevel, fmt: LogFormat) -> int:
    """Run the parent until it is told to stop; the process's exit code."""
    return asyncio.run(Supervisor(config, level, fmt).run())
