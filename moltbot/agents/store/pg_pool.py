"""A small bounded pool of asyncpg connections.

asyncpg has a pool of its own, but taking a connection from it and giving it back costs about
a hundred microseconds of CPU (several times the query itself, measured here); a session turn
takes a connection five times. This one does only what the store needs: at most `max_size`
connections, opened on demand, handed out in the order they were asked for, and a connection
whose user was interrupted mid-statement (cancelled, failed) is closed rather than reused, since
its state is unknown. The store keeps no session state on its connections (no SET, LISTEN,
cursors or open transactions), so nothing needs resetting between users.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import asyncpg


class PoolClosed(Exception):
    pass


class ConnectionPool:
    def __init__(self, dsn: str, min_size: int, max_size: int, **connect: Any) -> None:
        self._dsn = dsn
        self._min, self._max = min_size, max_size
        self._connect = connect
        self._idle: deque[asyncpg.Connection] = deque()
        self._waiters: deque[asyncio.Future[asyncpg.Connection | None]] = deque()
        self._size = 0  # open connections and connections being opened
        self._closed = False
        self._in_use: set[asyncpg.Connection] = set()
        self._drained = asyncio.Event()  # closed, and every connection given back

    async def start(self) -> None:
        for _ in range(self._min):
            self._idle.append(await self._open())

    async def _open(self, *, reserved: bool = False) -> asyncpg.Connection:
        """A new connection; `reserved`: its place was already counted in `_size`."""
        if not reserved:
            self._size += 1
        try:
            return await asyncpg.connect(self._dsn, **self._connect)
        except BaseException:
            self._size -= 1
            self._wake(None)
            raise

    @contextlib.asynccontextmanager
    async def acquire(self, timeout: float) -> AsyncIterator[asyncpg.Connection]:
        conn = await self.take(timeout)
        try:
            yield conn
        except asyncpg.PostgresError:  # the server refused a statement: the connection is fine
            self.give_back(conn)
            raise
        except BaseException:
            self.give_back(conn, broken=True)
            raise
        self.give_back(conn)

    async def take(self, timeout: float) -> asyncpg.Connection:
        """A connection for one user; waits (at most `timeout` seconds) when all are busy."""
        conn = await self._take(timeout)
        self._in_use.add(conn)
        return conn

    async def _take(self, timeout: float) -> asyncpg.Connection:
        if self._closed:
            raise PoolClosed("the pool is closed")
        while self._idle:
            conn = self._idle.pop()  # the most recently used: warm, and the others may idle
            if not conn.is_closed():
                return conn
            self._size -= 1
        if self._size < self._max:
            return await self._open()
        waiter: asyncio.Future[asyncpg.Connection | None] = (
            asyncio.get_running_loop().create_future()
        )
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                conn = await waiter
        except BaseException:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                got = waiter.result()  # handed over just as we stopped waiting: pass it on
                if got is None:
                    self._size -= 1
                    self._wake(None)
                else:
                    self._release(got)
            raise
        if conn is None:  # a connection was closed: its place is ours to open
            return await self._open(reserved=True)
        return conn

    def give_back(self, conn: asyncpg.Connection, *, broken: bool = False) -> None:
        """Return `conn`; `broken`: its user did not finish cleanly, so it is closed."""
        self._in_use.discard(conn)
        if broken:
            conn.terminate()
        self._release(conn)

    def _release(self, conn: asyncpg.Connection) -> None:
        if self._closed or conn.is_closed():
            conn.terminate()
            self._size -= 1
            if self._closed and self._size <= 0:
                self._drained.set()
            self._wake(None)
        elif not self._wake(conn):
            self._idle.append(conn)

    def _wake(self, conn: asyncpg.Connection | None) -> bool:
        """Hand `conn` (None: a free place) to the first waiter still waiting."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                if conn is None:
                    self._size += 1  # the waiter opens it; counted now so no one else does
                waiter.set_result(conn)
                return True
        return False

    async def close(self) -> None:
        """Close the idle connections now and the others as they come back; returns when all
        are closed (callers bound the wait, then `terminate`)."""
        self._closed = True
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(PoolClosed("the pool is closed"))
        self._waiters.clear()
        idle, self._idle = list(self._idle), deque()
        for conn in idle:
            with contextlib.suppress(Exception):
                await conn.close(timeout=5)
            conn.terminate()
        self._size -= len(idle)
        if self._size <= 0:
            self._drained.set()
        await self._drained.wait()

    def terminate(self) -> None:
        """Close every connection at once, in use or not."""
        self._closed = True
        for conn in [*self._idle, *self._in_use]:
            conn.terminate()
        self._idle.clear()
        self._drained.set()
