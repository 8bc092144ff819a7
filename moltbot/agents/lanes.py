"""Run scheduling: one run at a time per session (FIFO), a bounded number overall."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class Lanes:
    """`async with lanes.slot(session_key):` waits for the session's earlier runs, then for a
    global slot. asyncio's Lock and Semaphore wake waiters in arrival order, so both are FIFO."""

    def __init__(self, max_concurrent: int) -> None:
        self._global = asyncio.Semaphore(max_concurrent)
        # Per-session locks with a count of users, dropped when idle so memory does not grow with
        # the number of sessions ever seen.
        self._sessions: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def slot(self, session_key: str, deadline: float | None = None) -> AsyncIterator[None]:
        """Hold the session's lane and a global slot; waiting past `deadline` (loop time)
        raises TimeoutError."""
        lock = self._enter(session_key)
        try:
            await self._acquire(lock, deadline)
            try:
                yield
            finally:
                self._global.release()
                lock.release()
        finally:
            self._leave(session_key)

    async def _acquire(self, lock: asyncio.Lock, deadline: float | None) -> None:
        if not lock.locked() and not self._global.locked():
            # Nothing to wait for (the common case): no timer needed.
            await lock.acquire()
            await self._global.acquire()
            return
        async with asyncio.timeout_at(deadline):
            await lock.acquire()
            try:
                await self._global.acquire()
            except BaseException:
                lock.release()
                raise

    def _enter(self, key: str) -> asyncio.Lock:
        lock, users = self._sessions.get(key) or (asyncio.Lock(), 0)
        self._sessions[key] = (lock, users + 1)
        return lock

    def _leave(self, key: str) -> None:
        lock, users = self._sessions[key]
        if users == 1:
            del self._sessions[key]
        else:
            self._sessions[key] = (lock, users - 1)
