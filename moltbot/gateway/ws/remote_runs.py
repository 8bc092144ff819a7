"""Runs of the other processes sharing the session store, as `agent.wait` and `chat.abort`
reach them (through the store's run channel; see moltbot/agents/store/pg_channel.py).

- waiting: a run this process does not know may be running elsewhere. It has ended once its
  turn is recorded: the waiter looks it up in the store, at once and then every half second
  (turns are not announced: see pg_channel.py), so a wait costs the store one small read a
  poll and a busy gateway nothing.
- aborting: an "abort" notice goes to every process; each aborts its matching runs and answers
  with "aborted"; the caller collects the answers for a short while.
- following one run: a "follow" notice asks the process running it to relay its events; it
  answers "followed" and from then on sends each `agent` event payload as an "event" notice
  (in order, one sender per run, a payload too long for one notice in parts) until the end.
- following a session (`agent.follow`, or reading its chat): a process whose sockets do says
  so in "watch" notices, at once and then every WATCH_SECONDS while they do; the others relay
  the runs of those sessions, as for one followed run, until the watch lapses
  (WATCH_TTL_SECONDS unrepeated).
  Only followed runs and sessions cost notices.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from moltbot.agents.runtime import AgentRuntime
from moltbot.agents.store.protocol import RunChannel
from moltbot.agents.store.records import SessionStoreError
from moltbot.logs import get_logger

log = get_logger("moltbot.ws")

POLL_SECONDS = 0.5
# How long an abort request collects answers: one round trip through the database per process.
ABORT_ANSWER_SECONDS = 1.0
MAX_WAITERS = 10_000  # bounded, as everything kept per request
MAX_ABORTS = 1_000
FOLLOW_ANSWER_SECONDS = 1.0
MAX_RELAYED = 1_000  # runs of this process whose events go to other processes
RELAY_QUEUE = 10_000  # events of one relayed run waiting to be sent
PART_CHARS = 1500  # a payload longer goes out in parts (each < 7000 bytes, even in UTF-8)
WATCH_SECONDS = 5.0  # how often a process repeats which sessions its sockets follow
WATCH_TTL_SECONDS = 15.0  # a watch not repeated within this long lapses
MAX_WATCHED = 10_000  # sessions other processes follow, remembered here
MAX_ANNOUNCED = 2_000  # sessions a process names every WATCH_SECONDS (the newest followed)
WATCH_NOTICE_BYTES = 6000  # the keys of one "watch" notice, as JSON

Deliver = Callable[[dict[str, Any]], None]


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
        self._waiting = 0  # agent.wait calls polling the store
        self._aborts: dict[str, tuple[asyncio.Event, list[str]]] = {}
        self._follows: dict[str, asyncio.Future[dict[str, Any]]] = {}  # by request id
        self._relayed: dict[str, asyncio.Queue[dict[str, Any] | None]] = {}  # by run id
        self._parts: dict[str, list[str]] = {}  # payloads arriving in parts, by part id
        # Sessions that sockets of other processes follow -> when that lapses (monotonic).
        self._watched: dict[str, float] = {}
        self.deliver: Deliver | None = None  # the hub's: an event payload of another process
        self._unsubscribe = channel.subscribe(self._on_notice)

    def close(self) -> None:
        self._unsubscribe()

    # -- agent.wait ---------------------------------------------------------------------------

    async def wait_end(self, run_id: str, timeout: float) -> dict[str, Any] | None:
        """The recorded end of `run_id` once it has ended (wherever it ran), or None when
        `timeout` passes first."""
        if timeout <= 0 or self._waiting >= MAX_WAITERS:
            return await self._look_up(run_id)
        self._waiting += 1
        try:
            async with asyncio.timeout(timeout):
                while (found := await self._look_up(run_id)) is None:  # noqa: ASYNC110 (a database)
                    await asyncio.sleep(POLL_SECONDS)
                return found
        except TimeoutError:
            return None
        finally:
            self._waiting -= 1

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

    # -- agent.follow of one run ---------------------------------------------------------------

    async def follow(self, run_id: str) -> str | None:
        """Ask the process running `run_id` to relay its events here; its status, or None when
        no process answers (no such run is running)."""
        if len(self._follows) >= MAX_ABORTS:
            return None
        request = uuid.uuid4().hex
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._follows[request] = answer
        try:
            await self._channel.publish({"t": "follow", "req": request, "run": run_id})
            async with asyncio.timeout(FOLLOW_ANSWER_SECONDS):
                return str((await answer).get("status"))
        except (TimeoutError, SessionStoreError):
            return None
        finally:
            del self._follows[request]

    def relay(self, run_id: str, payload: dict[str, Any], last: bool) -> None:
        """An event of a run of this process that another process follows (see `relaying`)."""
        queue = self._relayed.get(run_id)
        if queue is None:
            return
        for item in (payload, None) if last else (payload,):  # None: the sender's end
            if queue.full():  # the database cannot keep up: the oldest event is dropped
                log.warning("a followed run's relay is full; dropping an event", run_id=run_id)
                queue.get_nowait()
            queue.put_nowait(item)
        if last:
            del self._relayed[run_id]

    def relaying(self, run_id: str) -> bool:
        return run_id in self._relayed

    def _start_relay(self, notice: dict[str, Any]) -> None:
        run_id = str(notice.get("run"))
        run = self._runtime.get_run(run_id)
        if run is None or run.done.is_set():
            return
        self._open_relay(run_id)
        answer = {"t": "followed", "req": notice.get("req"), "run": run_id, "status": run.status}
        self._spawn(self._channel.publish(answer), name="follow answer")

    def _open_relay(self, run_id: str) -> None:
        """From now on `relay` sends this run's events to the other processes."""
        if run_id not in self._relayed and len(self._relayed) < MAX_RELAYED:
            queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(RELAY_QUEUE)
            self._relayed[run_id] = queue
            self._spawn(self._send_relay(queue), name=f"relay {run_id}")

    # -- agent.follow of a session ------------------------------------------------------------

    def watch(self, session_keys: list[str]) -> None:
        """Tell the other processes that sockets here follow these sessions (see the module
        docstring); the hub repeats it every WATCH_SECONDS while they do."""
        for keys in _watch_batches(session_keys):
            self._spawn(self._publish_quietly({"t": "watch", "keys": keys}), name="watch")

    async def _publish_quietly(self, notice: dict[str, Any]) -> None:
        try:
            await self._channel.publish(notice)
        except SessionStoreError as exc:
            log.warning("could not send a run notice", kind=notice.get("t"), error=str(exc))

    def relays_session(self, session_key: str, run_id: str) -> bool:
        """Whether another process follows `session_key`; if so the run's relay is opened
        (the caller then relays the event at hand). One test while nobody follows any."""
        if not self._watched:
            return False
        lapses = self._watched.get(session_key)
        if lapses is None:
            return False
        if lapses < time.monotonic():
            del self._watched[session_key]
            return False
        self._open_relay(run_id)
        return run_id in self._relayed

    def _take_watch(self, notice: dict[str, Any]) -> None:
        keys = notice.get("keys")
        if not isinstance(keys, list):
            return
        lapses = time.monotonic() + WATCH_TTL_SECONDS
        for key in keys:
            if not isinstance(key, str):
                continue
            self._watched.pop(key, None)  # to the end: the oldest watch goes first when full
            self._watched[key] = lapses
            if len(self._watched) > MAX_WATCHED:
                del self._watched[next(iter(self._watched))]
            for run in self._runtime.active_runs(key):  # runs already going: from now on
                self._open_relay(run.id)

    async def _send_relay(self, queue: asyncio.Queue[dict[str, Any] | None]) -> None:
        while (payload := await queue.get()) is not None:
            try:
                for notice in event_notices(payload):
                    await self._channel.publish(notice)
            except SessionStoreError as exc:
                log.warning("could not relay a followed run's event", error=str(exc))

    def _take_event(self, notice: dict[str, Any]) -> None:
        """An "event" notice (or one part of it) from another process."""
        text = notice.get("data")
        part, parts = notice.get("part"), notice.get("parts")
        if isinstance(part, int) and isinstance(parts, int) and parts > 1:
            pid = str(notice.get("id"))
            pieces = self._parts.setdefault(pid, [])
            if len(self._parts) > MAX_RELAYED or part != len(pieces):
                self._parts.pop(pid, None)  # out of order or too many at once: give it up
                return
            pieces.append(str(text))
            if len(pieces) < parts:
                return
            text = "".join(self._parts.pop(pid))
        try:
            payload = json.loads(str(text))
        except ValueError:
            return
        if self.deliver is not None and isinstance(payload, dict):
            self.deliver(payload)

    # -- notices ------------------------------------------------------------------------------

    def _on_notice(self, notice: dict[str, Any]) -> None:
        kind = notice.get("t")
        if kind == "abort" and notice.get("o") != self._channel.origin:
            self._abort_here(notice)
        elif kind == "aborted" and (pending := self._aborts.get(str(notice.get("req")))):
            answered, aborted = pending
            aborted.extend(str(r) for r in notice.get("runs") or () if r not in aborted)
            answered.set()
        elif kind == "follow" and notice.get("o") != self._channel.origin:
            self._start_relay(notice)
        elif kind == "followed" and (answer := self._follows.get(str(notice.get("req")))):
            if not answer.done():
                answer.set_result(notice)
        elif kind == "event" and notice.get("o") != self._channel.origin:
            self._take_event(notice)
        elif kind == "watch" and notice.get("o") != self._channel.origin:
            self._take_watch(notice)

    def _abort_here(self, notice: dict[str, Any]) -> None:
        key, run_id = notice.get("key"), notice.get("run")
        runs = [
            run for run in self._runtime.active_runs(str(key)) if run_id is None or run.id == run_id
        ]
        aborted = [run.id for run in runs if run.abort(str(notice.get("reason") or "aborted"))]
        if aborted:
            answer = {"t": "aborted", "req": notice.get("req"), "runs": aborted}
            self._spawn(self._channel.publish(answer), name="abort answer")


def _watch_batches(session_keys: list[str]) -> list[list[str]]:
    """The keys in groups that each fit one notice."""
    batches: list[list[str]] = []
    size = WATCH_NOTICE_BYTES
    for key in session_keys:
        length = len(json.dumps(key, ensure_ascii=False).encode("utf-8", "surrogatepass")) + 1
        if size + length > WATCH_NOTICE_BYTES:
            batches.append([])
            size = 0
        batches[-1].append(key)
        size += length
    return batches


def event_notices(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """An `agent` event payload as "event" notices: one, or parts that stay under the limit."""
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    if len(text) <= PART_CHARS:
        return [{"t": "event", "data": text}]
    pieces = [text[i : i + PART_CHARS] for i in range(0, len(text), PART_CHARS)]
    pid = uuid.uuid4().hex
    return [
        {"t": "event", "id": pid, "part": n, "parts": len(pieces), "data": piece}
        for n, piece in enumerate(pieces)
    ]
