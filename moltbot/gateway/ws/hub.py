"""What the WS control plane shares across connections.

The hub is the one listener on the runtime's event bus: it routes each run's `agent` events and
the derived `chat` events to the connections subscribed to them (`Routes`), owns the tasks that
consume WS-started runs (a run must outlive the socket that started it), sends `tick`s, and on a
graceful stop says `shutdown` to every socket and closes it with 1012. It also counts the
sockets still in their handshake (`PendingHandshakes`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web

from moltbot.agents.events import AgentEvent, event_from_payload
from moltbot.agents.prompt import resolve_timezone
from moltbot.agents.runtime import AgentRuntime, now_ms
from moltbot.config.model import Config
from moltbot.content import Message
from moltbot.gateway.ws.admission import PendingHandshakes
from moltbot.gateway.ws.approval_events import ApprovalRelay
from moltbot.gateway.ws.chat_events import ChatProjector
from moltbot.gateway.ws.connection import Connection
from moltbot.gateway.ws.dedupe import DedupeCache
from moltbot.gateway.ws.health import HEALTH_SHARE_OF_FRAME, HealthMonitor, build_health
from moltbot.gateway.ws.options import WsOptions
from moltbot.gateway.ws.protocol import CLOSE_SERVICE_RESTART
from moltbot.gateway.ws.remote_runs import MAX_ANNOUNCED, WATCH_SECONDS, RemoteRuns
from moltbot.gateway.ws.routes import Kind, Routes
from moltbot.logs import get_logger

log = get_logger("moltbot.ws")

# What a chat or agent payload leaves of maxPayload for the frame around the text.
PAYLOAD_HEADROOM = 8 * 1024


class Hub:
    def __init__(self, config: Config, options: WsOptions, started_at: float) -> None:
        self.config = config
        self.options = options
        self.started_at = started_at  # time.time() when the app was built
        self.connections: set[Connection] = set()  # registered: handshake done
        self.handshaking: set[Connection] = set()  # still in their handshake
        self.routes = Routes()
        self.chat = ChatProjector(text_room=options.max_payload - PAYLOAD_HEADROOM)
        self.dedupe = DedupeCache()
        self.approvals = ApprovalRelay()
        self.health = HealthMonitor(self._build_health)
        self.handshakes = PendingHandshakes(
            options.max_pending_handshakes, options.max_pending_handshakes_per_ip
        )
        # The zone of the time stamp in front of WS turns: looked up once, not per turn.
        self.timezone = resolve_timezone(config.agents.defaults.user_timezone)
        self._runtime: AgentRuntime | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None  # says which sessions are followed here
        self._tasks: set[asyncio.Task[Any]] = set()
        self._run_waiters: dict[str, set[asyncio.Future[None]]] = {}
        # Runs of other processes sharing the store (None: no other process can have any).
        self.remote: RemoteRuns | None = None
        self.stopping = False
        self._stop_reason = ""

    @property
    def runtime(self) -> AgentRuntime:
        if self._runtime is None:
            raise RuntimeError("the WS hub has not been started")
        return self._runtime

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, runtime: AgentRuntime) -> None:
        self._runtime = runtime
        self.chat.reply_of = self._reply_of
        self._unsubscribe = runtime.bus.subscribe(self._on_agent_event)
        self.approvals.attach(runtime.tools.approvals)
        if runtime.store.channel is not None:
            self.remote = RemoteRuns(runtime, runtime.store.channel, self.spawn)
            self.remote.deliver = self._deliver_remote
            self._watcher = asyncio.create_task(self._watch_loop(), name="ws session watch")
        self._ticker = asyncio.create_task(self._tick_loop(), name="ws ticks")

    def shutdown(self, reason: str = "gateway stopping") -> None:
        """Graceful stop: tell every client, then close its socket after what it has queued."""
        self.stopping = True
        self._stop_reason = reason
        if self._ticker is not None:
            self._ticker.cancel()
        # Sockets still in their handshake too: a stopping aiohttp server reads no more frames,
        # so their handshake could not end, only hold the stop up until it timed out.
        for conn in [*self.connections, *self.handshaking]:
            self._say_goodbye(conn)

    def _say_goodbye(self, conn: Connection) -> None:
        # restartExpectedMs is omitted rather than null (protocol deviation §10.1).
        self._send(conn, "shutdown", {"reason": self._stop_reason}, force=True)
        conn.close(CLOSE_SERVICE_RESTART, "service restart")

    async def close(self) -> None:
        """After the runtime has closed: stop listening and end the run consumers (their runs
        have finished or been aborted by then)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self.approvals.detach()
        if self.remote is not None:
            self.remote.close()
        tasks = [*self._tasks, *(t for t in (self._ticker, self._watcher) if t is not None)]
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- connections and tasks ----------------------------------------------------------------

    def register(self, conn: Connection) -> None:
        self.connections.add(conn)
        if self.stopping:  # its handshake ended after shutdown() went round: tell it now
            self._say_goodbye(conn)

    def subscribe(self, conn: Connection, kind: Kind, key: str) -> None:
        """Route `kind` events of `key` to `conn`. A session newly followed here is named to
        the other processes at once (and every WATCH_SECONDS after, by `_watch_loop`), so
        its runs there are relayed here."""
        new = not self.routes.targets("session", key) and not self.routes.targets("chat", key)
        self.routes.add(conn, kind, key)
        if new and kind != "run" and self.remote is not None:
            self.remote.watch([key])

    def unregister(self, conn: Connection) -> None:
        self.connections.discard(conn)
        self.routes.drop_connection(conn)
        self.approvals.unwatch(conn)
        if not self.connections:
            self.chat.clear()  # nobody left to watch: no run's chat view is needed

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """A task owned by the gateway, not by any connection (it survives disconnects)."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("ws background task failed", task=task.get_name(), error=repr(exc))

    async def wait_for_run_end(self, run_id: str, timeout: float) -> bool:
        """True once `run_id` ends (even a run that has not started yet), False on timeout."""
        run = self.runtime.get_run(run_id)
        if run is not None and run.done.is_set():
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._run_waiters.setdefault(run_id, set()).add(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter
            return True
        except TimeoutError:
            return False
        finally:
            waiters = self._run_waiters.get(run_id)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._run_waiters[run_id]

    # -- events -------------------------------------------------------------------------------

    def _reply_of(self, run_id: str) -> Message | None:
        run = self.runtime.get_run(run_id)
        return run.answer.message() if run is not None else None

    def _on_agent_event(self, event: AgentEvent) -> None:
        """Called synchronously for every event of every run, HTTP runs included: it must cost
        next to nothing when nobody watches, and it only queues frames."""
        remote = self.remote
        if remote is not None and (
            remote.relaying(event.run_id)
            or remote.relays_session(event.session_key, event.run_id)
        ):
            remote.relay(event.run_id, event.payload(), last=event.is_terminal)
        if not self.connections and not self._run_waiters:
            return
        try:
            try:
                self._forward_agent(event)
            except Exception:  # one failure must not keep the chat event from going out
                log.exception("could not forward an agent event", run_id=event.run_id)
            self._forward_chat(event)
        finally:
            # Whatever failed above: the run's end must still reach agent.wait and the routes.
            if event.is_terminal:
                self._run_ended(event.run_id)

    def _forward_agent(self, event: AgentEvent) -> None:
        by_run = self.routes.targets("run", event.run_id)
        by_session = self.routes.targets("session", event.session_key)
        if not by_run and not by_session:
            return
        targets = (by_run | by_session) if by_run and by_session else (by_run or by_session)
        payload = event.payload()
        # Every agent event must arrive (assistant events carry only their new text): a
        # follower too slow for them is closed as a slow consumer. The socket that started a
        # run holds the run back instead (runs.drain), so it does not get there.
        for conn in tuple(targets):
            self._send(conn, "agent", payload)

    def _forward_chat(self, event: AgentEvent) -> None:
        targets = self.routes.targets("chat", event.session_key)
        if not targets:
            return  # nobody reads this session's chat: no view kept, no deltas built
        update = self.chat.project(event)
        if update is not None:
            for conn in tuple(targets):
                self._send(conn, "chat", update.payload, droppable=update.droppable)

    def _deliver_remote(self, payload: dict[str, Any]) -> None:
        """An `agent` event of a run in another process, relayed because a socket here
        follows it or its session, or reads the session's chat."""
        run_id, key = str(payload.get("runId")), str(payload.get("sessionKey"))
        targets = self.routes.targets("run", run_id) | self.routes.targets("session", key)
        for conn in tuple(targets):
            self._send(conn, "agent", payload)
        if self.routes.targets("chat", key) and (event := event_from_payload(payload)):
            self._forward_chat(event)
        data = payload.get("data")
        if payload.get("stream") == "lifecycle" and isinstance(data, dict):
            if data.get("phase") in ("end", "error"):
                self.routes.forget("run", run_id)

    def _run_ended(self, run_id: str) -> None:
        self.routes.forget("run", run_id)
        self.chat.forget(run_id)
        for waiter in self._run_waiters.get(run_id, ()):
            if not waiter.done():
                waiter.set_result(None)

    def _send(
        self,
        conn: Connection,
        name: str,
        payload: Any,
        *,
        droppable: bool = False,
        force: bool = False,
    ) -> None:
        """Queue an event on one socket; a failure there does not stop the others."""
        try:
            conn.send_event(name, payload, droppable=droppable, force=force)
        except Exception:
            log.exception("could not queue a ws event", conn=conn.id, name=name)

    async def _watch_loop(self) -> None:
        """Remind the other processes of the sessions watched here (agent.follow, chat)."""
        assert self.remote is not None
        while True:
            await asyncio.sleep(WATCH_SECONDS)
            # Chat readers, then session follows, the newest of each last: a busy process
            # names the last MAX_ANNOUNCED of them (a few notices), follows kept first.
            keys = dict.fromkeys([*self.routes.keys("chat"), *self.routes.keys("session")])
            if keys:
                self.remote.watch(list(keys)[-MAX_ANNOUNCED:])

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.options.tick_interval)
            for conn in list(self.connections):
                self._send(conn, "tick", {"ts": now_ms()}, droppable=True)

    # -- health -------------------------------------------------------------------------------

    async def _build_health(self) -> dict[str, Any]:
        max_bytes = int(self.options.max_payload * HEALTH_SHARE_OF_FRAME)
        return await build_health(self.runtime, self.config, max_bytes)

    def uptime_ms(self) -> int:
        return max(0, int((time.time() - self.started_at) * 1000))


HUB_KEY = web.AppKey("ws_hub", Hub)
