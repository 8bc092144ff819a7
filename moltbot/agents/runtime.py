"""The one run codepath. HTTP, WebSocket and CLI all start turns here.

`runtime.start(request)` validates and schedules a turn and returns its `Run`; iterating the run
yields `AgentEvent`s as they happen: the start, text and tool-call fragments, usage, the end.
Each run works in its own task so that its timeout and abort never land in the consumer's code;
when the consumer stops iterating before the end (a client went away), the run is aborted and its
upstream request closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
import uuid
from collections import OrderedDict
from contextlib import AsyncExitStack

from moltbot.agents.directory import Agent, AgentDirectory
from moltbot.agents.events import (
    AgentEvent,
    EventBus,
    EventItem,
    RunEnded,
    RunStarted,
    UsageReport,
    usage_data,
)
from moltbot.agents.lanes import Lanes
from moltbot.agents.prompt import WorkspaceFiles, resolve_timezone, system_prompt
from moltbot.agents.run import (
    AnswerTooLarge,
    Run,
    RunStatus,
    SlowConsumer,
    TurnRequest,
    now_ms,
)
from moltbot.agents.session_keys import agent_of_key
from moltbot.agents.store.protocol import SessionStore
from moltbot.agents.store.records import SessionStoreError, TurnRecord
from moltbot.agents.tool_loop import ToolLoop, reads_as_reply
from moltbot.config.model import Config
from moltbot.content import Message, well_formed, without_image_bytes
from moltbot.logs import get_logger
from moltbot.providers.base import ModelRequest, ProviderError
from moltbot.providers.failover import FailoverStream, RetryPolicy
from moltbot.providers.registry import ProviderRegistry
from moltbot.tools.toolbox import Toolbox

# The runtime's public face: start turns here, read them through `Run`.
__all__ = ["AgentRuntime", "InvalidTurn", "Run", "RunStatus", "TurnRequest", "usage_data"]

log = get_logger("moltbot.agents")

# Finished runs stay visible to `get_run` (agent.wait, idempotency) this long, up to this many.
RECENT_RUN_SECONDS = 600
RECENT_RUN_LIMIT = 1000
# How many earlier messages of a session are sent to the model.
HISTORY_MESSAGES = 100


class SessionBusy(Exception):
    """The session's earlier turn (run by another process) outlasted this run's deadline."""


class InvalidTurn(ValueError):
    """The request cannot become a run (unknown agent, empty message, …)."""

    def __init__(self, message: str, *, code: str = "invalid_request") -> None:
        super().__init__(message)
        self.code = code


class AgentRuntime:
    def __init__(
        self,
        *,
        config: Config,
        store: SessionStore,
        providers: ProviderRegistry,
        retry_policy: RetryPolicy | None = None,
        stall_seconds: float | None = None,
    ) -> None:
        defaults = config.agents.defaults
        self.agents = AgentDirectory(config)
        self.store = store
        self.providers = providers
        self.bus = EventBus()
        self._timeout = float(defaults.timeout_seconds)
        self._zone = resolve_timezone(defaults.user_timezone)
        self._files = WorkspaceFiles(defaults.bootstrap_max_chars)
        self._lanes = Lanes(defaults.max_concurrent)
        self._retry = retry_policy or RetryPolicy()
        self._max_tool_rounds = defaults.max_tool_rounds
        self.tools = Toolbox(config, store)  # the agents' own tools
        self._stall_seconds = stall_seconds
        self._stop_deadline: float | None = None
        self._active: dict[str, Run] = {}
        self._recent: OrderedDict[str, tuple[float, Run]] = OrderedDict()

    # -- starting and finding runs ---------------------------------------------------------

    def start(self, request: TurnRequest) -> Run:
        """Validate and schedule a turn. Raises `InvalidTurn`; never blocks."""
        agent = self._agent_for(request)
        if not any(m.text.strip() or m.images or m.role == "tool" for m in request.input):
            raise InvalidTurn("message must not be empty", code="empty_message")
        self._check_images(self._model_refs(agent, request)[0], request)
        self._check_tool_names(agent, request)
        run_id = request.run_id or f"run_{uuid.uuid4().hex}"
        if self.get_run(run_id) is not None:
            raise InvalidTurn(f'run id "{run_id}" is already in use', code="duplicate_run")
        run = Run(
            id=run_id,
            session_key=request.session_key,
            agent=agent,
            request=request,
            input=request.input,
        )
        if self._stall_seconds is not None:
            run.stall_seconds = self._stall_seconds
        self._active[run_id] = run
        run._task = asyncio.create_task(self._execute(run), name=f"run {run_id}")
        return run

    def _agent_for(self, request: TurnRequest) -> Agent:
        key_agent = agent_of_key(request.session_key)
        agent_id = request.agent_id or key_agent or self.agents.default_id
        if request.agent_id and key_agent and key_agent != request.agent_id:
            raise InvalidTurn(
                f'agent "{request.agent_id}" does not match session key agent "{key_agent}"'
            )
        agent = self.agents.get(agent_id)
        if agent is None:
            raise InvalidTurn(f'unknown agent id "{agent_id}"', code="agent_not_found")
        return agent

    def _model_refs(self, agent: Agent, request: TurnRequest) -> tuple[str, ...]:
        """The models the turn may use, first choice first: the agent's (or the default
        model), or the one the request picked among them."""
        refs = agent.model_refs or (self.providers.default_ref(),)
        if request.model_ref is None:
            return refs
        for ref in refs:
            if same_ref(ref, request.model_ref):
                return (ref,)
        raise InvalidTurn(
            f'model "{request.model_ref}" is not one agent "{agent.id}" may use '
            f"(its models: {', '.join(refs)})",
            code="model_not_allowed",
        )

    def _check_images(self, ref: str, request: TurnRequest) -> None:
        """Images go only to a model whose config says it takes them: a clear refusal, not a
        silent drop. The first model decides (fallbacks are tried with what it accepted)."""
        if not any(m.images for m in (*request.context, *request.input)):
            return
        if not self.providers.takes_images(ref):
            raise InvalidTurn(
                f'model "{ref}" does not take image input (set input: ["text", "image"] on '
                "the model in models.providers if it does)",
                code="image_input_unsupported",
            )

    def _check_tool_names(self, agent: Agent, request: TurnRequest) -> None:
        """A client tool may not share a name with one of the agent's own: a call to it could
        not be told apart."""
        own = {tool.name for tool in self.tools.for_agent(agent)}
        clash = sorted(own.intersection(tool.name for tool in request.tools.tools))
        if clash:
            raise InvalidTurn(
                f"tool name {', '.join(map(repr, clash))} is taken by the agent's own tools; "
                "rename the client tool",
                code="tool_name_clash",
            )

    def get_run(self, run_id: str) -> Run | None:
        """A running run, or one that finished in the last ten minutes."""
        if run := self._active.get(run_id):
            return run
        entry = self._recent.get(run_id)
        return entry[1] if entry else None

    def active_runs(self, session_key: str | None = None) -> list[Run]:
        runs = self._active.values()
        return [r for r in runs if session_key is None or r.session_key == session_key]

    def abort(self, run_id: str) -> bool:
        run = self._active.get(run_id)
        return run.abort() if run else False

    # -- executing a run ---------------------------------------------------------------------

    async def _execute(self, run: Run) -> None:
        # One deadline for the whole run, waiting for a free slot included: a full queue
        # ends in a timeout, never in an endless wait.
        deadline = asyncio.get_running_loop().time() + (
            run.request.timeout_seconds or self._timeout
        )
        try:
            async with self._lanes.slot(run.session_key, deadline), AsyncExitStack() as turn:
                # Finishing (persisting) inside the lane: the session's next turn sees this one.
                # The store's turn lock does the same across processes sharing the store.
                if not run.request.ephemeral:
                    await self._take_turn(turn, run, deadline)
                await self._run_in_lane(run, deadline)
        except asyncio.CancelledError:  # aborted while still queued
            await self._finish(run, "aborted", run._abort_reason or "aborted", "aborted")
        except SessionBusy:
            message = "timed out waiting for the session's earlier turn (on another process)"
            await self._finish(run, "error", message, "timeout")
        except TimeoutError:
            message = "timed out waiting for a free run slot (agents.defaults.maxConcurrent)"
            await self._finish(run, "error", message, "timeout")
        except SessionStoreError as exc:
            await self._finish(run, "error", f"could not start the turn: {exc}", "store")

    async def _take_turn(self, turn: AsyncExitStack, run: Run, deadline: float) -> None:
        """Hold the session's turn lock until `turn` closes (waiting counts in the deadline)."""
        try:
            async with asyncio.timeout_at(deadline):
                await turn.enter_async_context(self.store.turn_lock(run.session_key))
        except TimeoutError:
            raise SessionBusy from None

    async def _run_in_lane(self, run: Run, deadline: float) -> None:
        try:
            run.status, run.started_at = "running", now_ms()
            self._emit(run, RunStarted(run.started_at))
            async with asyncio.timeout_at(deadline):
                await self._call_model(run)
        except asyncio.CancelledError:
            await self._finish(run, "aborted", run._abort_reason or "aborted", "aborted")
        except SlowConsumer as exc:
            await self._finish(run, "aborted", f"slow consumer: {exc}", "aborted")
        except AnswerTooLarge as exc:
            await self._finish(run, "error", str(exc), "malformed")
        except TimeoutError:
            await self._finish(run, "error", "agent run timed out", "timeout")
        except ProviderError as exc:
            await self._finish(run, "error", str(exc), exc.kind)
        except Exception as exc:
            log.exception("agent run failed", run_id=run.id)
            await self._finish(
                run, "error", f"internal error: {exc.__class__.__name__}", "internal"
            )
        else:
            await self._finish(run, "ok")

    async def _call_model(self, run: Run) -> None:
        refs = self._model_refs(run.agent, run.request)
        request = await self._model_request(run, refs[0])
        loop = ToolLoop(
            run,
            request,
            open_stream=lambda r: FailoverStream(self.providers, refs, r, self._retry),
            relay=functools.partial(self._relay, run),
            tools=self.tools.for_agent(run.agent),
            context=self.tools.context(run.agent, run.session_key, run.id),
            max_rounds=self._max_tool_rounds,
        )
        await loop.run()

    async def _model_request(self, run: Run, model_ref: str) -> ModelRequest:
        history: list[Message] = []
        if not run.request.ephemeral:
            history = await self.store.prompt_history(run.session_key, HISTORY_MESSAGES)
        files = await self._files.load(run.agent.workspace)
        system = system_prompt(
            agent=run.agent,
            model_ref=model_ref,
            default_ref=self.providers.default_ref(),
            zone=self._zone,
            files=files,
            extra=run.request.extra_system_prompt,
        )
        context, run.input = _new_part(history, run.request.context, run.request.input)
        messages = well_formed([*history, *context, *run.input])
        return ModelRequest(
            model="",
            system=system,
            messages=tuple(messages),
            sampling=run.request.sampling,
            tools=run.request.tools,
        )

    # -- ending a run ------------------------------------------------------------------------

    async def _finish(
        self, run: Run, status: RunStatus, error: str | None = None, kind: str | None = None
    ) -> None:
        if run._finishing:
            return
        run._finishing = True
        run.status, run.error, run.error_kind = status, error, kind
        run.ended_at = now_ms()
        try:
            if run.started_at is not None and not run.request.ephemeral:
                # No shield needed: abort() refuses once `_finishing` is set.
                await self._record(run)
        finally:
            if run.usage is not None:
                self._emit(run, UsageReport(run.usage))
            end = RunEnded(
                status=run.status,
                started_at=run.started_at,
                ended_at=run.ended_at,
                finish_reason=run.finish_reason,
                model=run.model_ref,
                error=run.error,
                error_kind=run.error_kind,
            )
            self._emit(run, end)
            self._retire(run)

    async def _record(self, run: Run) -> None:
        turn = TurnRecord(
            key=run.session_key,
            agent_id=run.agent.id,
            run_id=run.id,
            messages=(*run.input, *(run.steps or [run.answer.message()])),
            status=run.status,  # type: ignore[arg-type]  # ended: "ok", "error" or "aborted"
            started_at=run.started_at or run.ended_at or now_ms(),
            ended_at=run.ended_at or now_ms(),
            model=run.model_ref,
            usage=run.usage,
            error=run.error,
        )
        try:
            await self.store.record_turn(turn)
        except Exception as exc:  # the run's outcome still reaches the client
            log.error("could not persist turn", run_id=run.id, error=str(exc))
            if run.status == "ok":
                run.status, run.error, run.error_kind = "error", "could not save the turn", "store"

    def _event(self, run: Run, item: EventItem) -> AgentEvent:
        run.seq += 1
        return AgentEvent(run.id, run.seq, now_ms(), run.session_key, item)

    def _emit(self, run: Run, item: EventItem) -> None:
        """Start, usage and end: queued without waiting (a few per run)."""
        event = self._event(run, item)
        run._push(event)
        self.bus.publish(event)

    async def _relay(self, run: Run, item: EventItem) -> None:
        """A fragment of the reply: waits while the consumer's buffer is full, so a slow
        reader holds the upstream back instead of growing memory."""
        event = self._event(run, item)
        self.bus.publish(event)
        await run._put(event)

    def _retire(self, run: Run) -> None:
        run.done.set()
        self._active.pop(run.id, None)
        if not run.request.keep_after_end:
            return
        now = time.monotonic()
        self._recent[run.id] = (now, run)
        while self._recent and (
            len(self._recent) > RECENT_RUN_LIMIT
            or next(iter(self._recent.values()))[0] < now - RECENT_RUN_SECONDS
        ):
            self._recent.popitem(last=False)

    # -- shutdown ----------------------------------------------------------------------------

    def begin_stop(self, grace_seconds: float) -> None:
        """The gateway is stopping: running turns have until now + grace to finish. Set when
        the stop begins, so the grace is not counted again after the HTTP drain."""
        if self._stop_deadline is None:
            self._stop_deadline = asyncio.get_running_loop().time() + grace_seconds

    async def close(self) -> None:
        """Let running turns finish until the stop deadline, abort the rest, release resources."""
        runs = list(self._active.values())
        deadline = self._stop_deadline or 0.0
        if runs and (remaining := deadline - asyncio.get_running_loop().time()) > 0:
            await asyncio.wait([asyncio.ensure_future(r.wait()) for r in runs], timeout=remaining)
        for run in runs:
            run.abort("gateway stopping")
        tasks = [r._task for r in runs if r._task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        with contextlib.suppress(Exception):
            await self.providers.close()
        await self.store.close()


def _new_part(
    history: list[Message], context: tuple[Message, ...], turn_input: tuple[Message, ...]
) -> tuple[tuple[Message, ...], tuple[Message, ...]]:
    """(context, input) without what the session already holds. A client answering a tool
    call sends the whole chat again, the call included; when the stored history has that
    call, the session has the conversation up to it: only the results are new. A client that
    resends the whole chat with a new question (an SDK keeping its own history, with `user`
    or a session key) has earlier messages ending where the history does: the session has
    them, and sending both would repeat every turn (and tool call ids, which Anthropic
    refuses)."""
    first = turn_input[0] if turn_input else None
    if not history:
        return context, turn_input
    if first is not None and first.tool_calls:
        stored = {call.id for message in history for call in message.tool_calls}
        if {call.id for call in first.tool_calls} <= stored:
            return (), turn_input[1:]
    if context and (
        without_image_bytes(context[-1]) == history[-1] or reads_as_reply(history, context[-1])
    ):
        return (), turn_input
    return context, turn_input


def same_ref(a: str, b: str) -> bool:
    """Model refs are equal when their providers match ignoring case and their models match."""
    provider_a, _, model_a = a.partition("/")
    provider_b, _, model_b = b.partition("/")
    return provider_a.strip().lower() == provider_b.strip().lower() and model_a == model_b
