"""Runs of the other processes sharing the session store, as `agent.wait` and `chat.abort`
reach them (through the store's run channel; see moltbot/agents/store/pg_channel.py).

- waiting: a run this process does not know may be running elsewhere. Its end is the "turn"
  notice the store sends when it records the turn; in case a notice is missed (the run ended
  before the wait began, or the listening connection was down) the waiter also looks the run
  up in the store, at the start and every few seconds.
- aborting: an "abort" notice goes to every process; each aborts its matching runs and answers
  with "aborted"; the caller collects the answers for a short while.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

from moltbot.agents.runtime import AgentRuntime
from moltbot.agents.store.protocol import RunChannel
from moltbot.agents.store.records import SessionStoreError
from moltbot.logs import get_logger

log = get_logger("moltbot.ws")

RECHECK_SECONDS = 2.0
# How long an abort request collects answers: one round trip through the database per process.
ABORT_ANSWER_SECONDS = 1.0
MAX_WAITERS = 10_000  # bounded, as everything kept per request
MAX_ABORTS = 1_000


class RemoteRuns:
    def __init__(
        self,
        runtime: AgentRuntime,
        channel: RunChannel,
        spawn: Callable[..., asyncio.Task[Any]],
    ) -> None:
        self._runtime = runtime
        self._channel = channel
        self._spawn = spawn
        self._ended: dict[str, set[asyncio.Future[dict[str, Any]]]] = {}
        self._aborts: dict[str, tuple[asyncio.Event, list[str]]] = {}
        self._unsubscribe = channel.subscribe(self._on_notice)

    def close(self) -> None:
        self._unsubscribe()

    # -- agent.wait ---------------------------------------------------------------------------

    async def wait_end(self, run_id: str, timeout: float) -> dict[str, Any] | None:
        """The "turn" notice of `run_id` once it has ended (wherever it ran), or None when
        `timeout` passes first."""
        if timeout <= 0 or sum(len(w) for w in self._ended.values()) >= MAX_WAITERS:
            return await self._look_up(run_id)
        ended: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._ended.setdefault(run_id, set()).add(ended)  # before the look-up: no gap
        try:
            async with asyncio.timeout(timeout):
                while (found := await self._look_up(run_id)) is None:
                    done, _ = await asyncio.wait([ended], timeout=RECHECK_SECONDS)
                    if done:
                        return ended.result()
                return found
        except TimeoutError:
            return None
        finally:
            waiters = self._ended.get(run_id)
            if waiters is not None:
                waiters.discard(ended)
                if not waiters:
                    del self._ended[run_id]

    async def _look_up(self, run_id: str) -> dict[str, Any] | None:
        try:
            return await self._channel.turn_end(run_id)
        except SessionStoreError as exc:
            log.warning("could not look a run up in the store", error=str(exc))
            return None

    # -- chat.abort ---------------------------------------------------------------------------

    async def abort(self, session_key: str, run_id: str | None, reason: str) -> list[str]:
        """Ask every other process to abort `run_id` (or every active run of `session_key`);
        the ids they report aborted."""
        if len(self._aborts) >= MAX_ABORTS:
            return []
        request = uuid.uuid4().hex
        answered, aborted = asyncio.Event(), []
        self._aborts[request] = (answered, aborted)
        try:
            notice = {"t": "abort", "req": request, "key": session_key, "run": run_id}
            await self._channel.publish({**notice, "reason": reason})
            deadline = asyncio.get_running_loop().time() + ABORT_ANSWER_SECONDS
            # One run: its process answers it. A whole session: all answers within the window.
            while not (run_id is not None and aborted):
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                try:
                    async with asyncio.timeout(remaining):
                        await answered.wait()
                except TimeoutError:
                    break
                answered.clear()
        except SessionStoreError as exc:
            log.warning("could not ask other processes to abort", error=str(exc))
        finally:
            del self._aborts[request]
        return aborted

    # -- notices ------------------------------------------------------------------------------

    def _on_notice(self, notice: dict[str, Any]) -> None:
        kind = notice.get("t")
        if kind == "turn":
            for waiter in self._ended.get(str(notice.get("run")), ()):
                if not waiter.done():
                    waiter.set_result(notice)
        elif kind == "abort" and notice.get("o") != self._channel.origin:
            self._abort_here(notice)
        elif kind == "aborted" and (pending := self._aborts.get(str(notice.get("req")))):
            answered, aborted = pending
            aborted.extend(str(r) for r in notice.get("runs") or () if r not in aborted)
            answered.set()

    def _abort_here(self, notice: dict[str, Any]) -> None:
        key, run_id = notice.get("key"), notice.get("run")
        runs = [
            run for run in self._runtime.active_runs(str(key)) if run_id is None or run.id == run_id
        ]
        aborted = [run.id for run in runs if run.abort(str(notice.get("reason") or "aborted"))]
        if aborted:
            answer = {"t": "aborted", "req": notice.get("req"), "runs": aborted}
            self._spawn(self._channel.publish(answer), name="abort answer")
