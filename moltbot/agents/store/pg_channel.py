"""Run notices between the processes that share one PostgreSQL store (LISTEN/NOTIFY).

Each process keeps one connection of its own (outside the pool) listening on one channel, and
sends notices with `pg_notify` through the pool. A notice is a small JSON object: `t` says what
it is, `o` which process sent it. Only what is rare goes this way (abort requests, following a
run): recorded turns are not announced, since a NOTIFY makes commits wait for one another
(PostgreSQL serialises the commits of notifying transactions) and wakes every listener, on
the hottest path there is; whoever waits for a run's end looks it up in the store instead
(`turn_end`).

A lost listening connection is opened again (with a growing delay); notices sent meanwhile are
missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import asyncpg

from moltbot.logs import get_logger

if TYPE_CHECKING:
    from moltbot.agents.store.postgres import PostgresStore

log = get_logger("moltbot.store")

CHANNEL = "moltbot_runs"
# PostgreSQL refuses payloads of 8000 bytes and more; ours stay well below.
MAX_NOTICE_BYTES = 7000
RECONNECT_FIRST_SECONDS, RECONNECT_MAX_SECONDS = 0.5, 30.0
CONNECT_TIMEOUT_SECONDS = 10.0

Listener = Callable[[dict[str, Any]], None]

# The recorded end of a run, by its id: its last message carries the status, end and error.
TURN_END = """
SELECT status, error, ts,
       (SELECT min(ts) FROM moltbot_messages WHERE run_id = $1)
FROM moltbot_messages WHERE run_id = $1
ORDER BY id DESC LIMIT 1
"""


def encode(notice: dict[str, Any]) -> str | None:
    """The notice as JSON, or None when it would be too long to send."""
    text = json.dumps(notice, ensure_ascii=False, separators=(",", ":"))
    return text if len(text.encode("utf-8", "surrogatepass")) <= MAX_NOTICE_BYTES else None


class PostgresChannel:
    def __init__(self, store: PostgresStore, dsn: str) -> None:
        self.origin = uuid.uuid4().hex  # this process, in the notices it sends
        self._store = store
        self._dsn = dsn
        self._listeners: list[Listener] = []
        self._conn: asyncpg.Connection | None = None
        self._reconnect: asyncio.Task[None] | None = None
        self._closed = False

    async def start(self) -> None:
        self._conn = await self._listen()

    async def _listen(self) -> asyncpg.Connection:
        conn = await asyncpg.connect(self._dsn, timeout=CONNECT_TIMEOUT_SECONDS)
        try:
            await conn.add_listener(CHANNEL, self._on_notify)
        except BaseException:
            conn.terminate()
            raise
        conn.add_termination_listener(self._on_lost)
        return conn

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    async def publish(self, notice: dict[str, Any]) -> None:
        """Send `notice` (with this process's origin) to every process, this one included."""
        text = encode({**notice, "o": self.origin})
        if text is None:
            log.warning("run notice too long to send", kind=notice.get("t"))
            return
        await self._store._run(
            "notify", lambda c: c.execute("SELECT pg_notify($1, $2)", CHANNEL, text)
        )

    async def turn_end(self, run_id: str) -> dict[str, Any] | None:
        """The recorded end of `run_id` ("t": "turn", its status, start, end and error); None
        if no turn of that id is recorded."""
        row = await self._store._run("turn_end", lambda c: c.fetchrow(TURN_END, run_id))
        if row is None:
            return None
        status, error, ended_at, started_at = row
        return {"t": "turn", "run": run_id, "status": status, "startedAt": started_at,
                "endedAt": ended_at, "error": error}  # fmt: skip

    async def close(self) -> None:
        self._closed = True
        if self._reconnect is not None:
            self._reconnect.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnect
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(*_ERRORS):
                await asyncio.wait_for(conn.close(), CONNECT_TIMEOUT_SECONDS)
            conn.terminate()

    def _on_notify(self, conn: object, pid: int, channel: str, payload: str) -> None:
        try:
            notice = json.loads(payload)
        except ValueError:
            return
        if not isinstance(notice, dict):
            return
        for listener in list(self._listeners):
            try:
                listener(notice)
            except Exception:
                log.exception("run notice listener failed", kind=notice.get("t"))

    def _on_lost(self, conn: object) -> None:
        if self._closed or self._reconnect is not None:
            return
        log.warning("lost the run notice connection; reconnecting")
        self._conn = None
        self._reconnect = asyncio.get_running_loop().create_task(self._reconnect_loop())

    async def _reconnect_loop(self) -> None:
        delay = RECONNECT_FIRST_SECONDS
        try:
            while not self._closed:
                await asyncio.sleep(delay)
                try:
                    self._conn = await self._listen()
                except _ERRORS as exc:
                    log.warning("run notice connection failed", error=str(exc))
                    delay = min(RECONNECT_MAX_SECONDS, delay * 2)
                    continue
                log.info("run notice connection back")
                return
        finally:
            self._reconnect = None


_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)
