"""POST /v1/responses and GET /v1/responses/{id}: OpenAI's Responses API on an ordinary run.

The request becomes a turn (responses_protocol), the run's events become the response object
or its event stream (responses_output), the way chat completions does it (openai.py): one
runtime, one run codepath, the run's bounded buffer and the stream's stall watch.

Sessions follow the chat-completions rules (`x-moltbot-session-key`, `user`), with one
difference: a request with neither gets a fresh session that is stored (unless `store:
false`), so that `previous_response_id` can continue it. The session store remembers each
response's session and turn count for RESPONSE_TTL_SECONDS; a continuation must come from the
latest response of its session (the session's history is the conversation so far).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from moltbot.agents.events import EventItem, TextChunk, ToolCallChunk
from moltbot.agents.run import CONSUMER_STALL_SECONDS, now_ms
from moltbot.agents.runtime import HISTORY_MESSAGES, AgentRuntime, InvalidTurn, Run, TurnRequest
from moltbot.agents.store.records import ResponseRecord, SessionStoreError, StoredResponse
from moltbot.content import Message
from moltbot.gateway.access_log import tags
from moltbot.gateway.errors import GatewayError, InvalidRequest, NotFound
from moltbot.gateway.http.body import read_json
from moltbot.gateway.http.image_fetch import fetch_images
from moltbot.gateway.http.limits import SESSION_KEY_HEADER, check_identity_fields
from moltbot.gateway.http.responses_output import Failure, ResponseBuilder, failure_code
from moltbot.gateway.http.responses_protocol import ResponsesRequest, parse_responses_request
from moltbot.gateway.http.routing import (
    MODEL_HEADER,
    model_override,
    resolve_agent,
    resolve_session,
    run_failure,
)
from moltbot.gateway.http.sse import KEEPALIVE_KEY, KEEPALIVE_SECONDS, STALL_KEY, EventStream
from moltbot.gateway.state import AUTH_KEY, CONFIG_KEY, RUNTIME_KEY
from moltbot.logs import get_logger

log = get_logger("moltbot.http")

RESPONSE_TTL_SECONDS = 30 * 24 * 3600
# Set on the application before it starts to keep responses for another time (tests).
RESPONSES_TTL_KEY = web.AppKey("responses_ttl_seconds", float)
# A response object larger than this is not kept for GET (it can still be continued).
MAX_STORED_BODY_BYTES = 1024 * 1024
FRESH_NAMESPACE = "openresponses"  # agent:<id>:openresponses:<uuid>, a request's own session

Save = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class _Session:
    key: str
    ephemeral: bool  # nothing is stored: a fresh session with store: false
    append: bool  # every input item is new to the session: all of it is the turn's input


async def create_response(request: web.Request) -> web.StreamResponse:
    request.app[AUTH_KEY].check_request(request)
    images = request.app[CONFIG_KEY].gateway.http.images
    parsed = parse_responses_request(await read_json(request), fetch_image_urls=images.allow_url)
    check_identity_fields(parsed.user, request.headers.get(SESSION_KEY_HEADER))
    runtime = request.app[RUNTIME_KEY]
    agent_id = resolve_agent(request, parsed.model, runtime.agents)
    session = await _session(request, parsed, agent_id, runtime)
    if parsed.image_urls:  # after routing: a request that is refused fetches nothing
        fetched = await fetch_images(parsed.image_urls, images, parsed.image_bytes)
        parsed = parsed.with_images(fetched)
    context, turn_input = parsed.split(append=session.append)
    turn = TurnRequest(
        input=turn_input,
        context=context,
        tools=parsed.tools,
        session_key=session.key,
        agent_id=agent_id,
        run_id=f"resp_{uuid.uuid4().hex}",
        extra_system_prompt=parsed.system,
        sampling=parsed.sampling,
        model_ref=model_override(request),
        ephemeral=session.ephemeral,
        keep_after_end=False,
    )
    try:
        run = runtime.start(turn)
    except InvalidTurn as exc:
        param = _refused_param(request, parsed, exc)
        raise InvalidRequest(str(exc), param=param, code=exc.code) from None
    tags(request).agent, tags(request).session_key = run.agent.id, session.key
    builder = ResponseBuilder(run.id, parsed, streaming=parsed.stream)
    save = _saver(request, run, keep=parsed.store and not session.ephemeral)
    try:
        if parsed.stream:
            return await stream_response(request, run, builder, save)
        return await respond(run, builder, save)
    finally:  # the model that answered, for the access log
        tags(request).model = run.model_ref or turn.model_ref


async def get_response(request: web.Request) -> web.Response:
    request.app[AUTH_KEY].check_request(request)
    if request.query.get("stream", "false").lower() not in ("false", "0"):
        raise InvalidRequest("a stored response cannot be replayed as a stream", param="stream")
    response_id = request.match_info["response_id"]
    stored = await request.app[RUNTIME_KEY].store.get_response(response_id)
    if stored is None:
        raise NotFound(
            f"Response with id '{response_id}' not found (unknown, expired, stored with "
            "store: false, or its session was deleted)",
            param="response_id",
            code="response_not_found",
        )
    if stored.body is None:
        raise NotFound(
            f"Response '{response_id}' was too large to keep for retrieval "
            f"(over {MAX_STORED_BODY_BYTES} bytes); it can still be continued",
            param="response_id",
            code="response_not_kept",
        )
    return web.Response(text=stored.body, content_type="application/json")


# -- sessions -------------------------------------------------------------------------------


async def _session(
    request: web.Request, parsed: ResponsesRequest, agent_id: str | None, runtime: AgentRuntime
) -> _Session:
    if parsed.previous_response_id is None:
        parsed.check_prior_results(frozenset())
        key, fresh = resolve_session(
            request, agent_id, parsed.user, runtime.agents, fresh_namespace=FRESH_NAMESPACE
        )
        return _Session(key, ephemeral=fresh and not parsed.store, append=fresh)
    previous = await _previous(runtime, parsed.previous_response_id)
    if (request.headers.get(SESSION_KEY_HEADER) or "").strip() or parsed.user:
        named, _ = resolve_session(request, agent_id, parsed.user, runtime.agents)
        if named != previous.session_key:
            raise InvalidRequest(
                f"previous_response_id '{previous.id}' belongs to another session than the "
                f"{SESSION_KEY_HEADER} or user of this request",
                param="previous_response_id",
            )
    history = await runtime.store.prompt_history(previous.session_key, HISTORY_MESSAGES)
    parsed.check_prior_results(open_calls(history))
    return _Session(previous.session_key, ephemeral=False, append=True)


def open_calls(history: list[Message]) -> frozenset[str]:
    """The calls of the session's last assistant message that no later tool result answers:
    its client calls, after the agent's own calls of the same answer were answered."""
    answered: set[str] = set()
    for message in reversed(history):
        if message.role == "tool":
            answered.add(message.tool_call_id or "")
        elif message.role == "assistant":
            return frozenset(c.id for c in message.tool_calls if c.id not in answered)
        else:
            break
    return frozenset()


async def _previous(runtime: AgentRuntime, response_id: str) -> StoredResponse:
    stored = await runtime.store.get_response(response_id)
    if stored is None or stored.reset_since:
        why = (
            "its session was reset since"
            if stored
            else "unknown, expired, stored with store: false, or its session was deleted"
        )
        raise NotFound(
            f"Previous response with id '{response_id}' not found ({why})",
            param="previous_response_id",
            code="previous_response_not_found",
        )
    if not stored.is_latest:
        raise InvalidRequest(
            f"previous_response_id '{response_id}' is not the latest response of its session "
            f"({stored.turns_since} later turn(s)); continue from the latest one (branching "
            "a conversation is not supported)",
            param="previous_response_id",
            code="previous_response_not_latest",
        )
    return stored


def _refused_param(request: web.Request, parsed: ResponsesRequest, exc: InvalidTurn) -> str:
    if exc.code in ("empty_message", "image_input_unsupported"):
        return "input"  # an empty message, or images for a text-only model
    if exc.code == "model_not_allowed":
        return MODEL_HEADER
    if exc.code == "tool_name_clash":
        return "tools"
    # Else the session's agent is unknown or does not match the model's.
    if SESSION_KEY_HEADER in request.headers:
        return SESSION_KEY_HEADER
    return "previous_response_id" if parsed.previous_response_id else "model"


def _saver(request: web.Request, run: Run, *, keep: bool) -> Save:
    """Remember the response for previous_response_id and GET, once its turn is recorded
    (before the client sees the end, so it can continue at once)."""
    store = request.app[RUNTIME_KEY].store
    ttl_ms = int(request.app.get(RESPONSES_TTL_KEY, RESPONSE_TTL_SECONDS) * 1000)

    async def save(body: dict[str, Any]) -> None:
        if not keep or run.started_at is None:  # no turn was recorded
            return
        data = orjson.dumps(body)
        now = now_ms()
        text = data.decode() if len(data) <= MAX_STORED_BODY_BYTES else None
        try:
            saved = await store.save_response(
                ResponseRecord(run.id, run.session_key, now, now + ttl_ms, text)
            )
        except SessionStoreError as exc:  # the client still gets its answer
            log.error("could not save the response", response_id=run.id, error=str(exc))
            return
        if not saved:
            log.warning("response not saved: its session was not recorded", response_id=run.id)

    return save


# -- answering ------------------------------------------------------------------------------


def _feed(builder: ResponseBuilder, item: EventItem) -> None:
    if isinstance(item, TextChunk):
        builder.text(item.text)
    elif isinstance(item, ToolCallChunk):
        builder.tool_call(item.index, item.id, item.name, item.arguments)


def _failure(run: Run) -> Failure:
    return Failure(failure_code(run.error_kind), run_failure(run).message)


async def respond(run: Run, builder: ResponseBuilder, save: Save) -> web.Response:
    """The whole response object. A failed run is an HTTP error (502, 504, ...) like a failed
    chat completion: clients raise on it rather than take an empty output for an answer."""
    async with aclosing(run.events()) as events:
        async for event in events:
            _feed(builder, event.item)
    if run.status != "ok":
        raise run_failure(run)
    body = builder.finish(finish_reason=run.finish_reason, usage=run.usage, failure=None)
    await save(body)
    return web.Response(body=orjson.dumps(body), content_type="application/json")


async def stream_response(
    request: web.Request, run: Run, builder: ResponseBuilder, save: Save
) -> web.StreamResponse:
    """Relay the run as Responses events as its chunks arrive; chunks that arrived together
    leave in one write (see stream_completion)."""
    out = ResponseStream(request, run, builder, save)
    keepalive = request.app.get(KEEPALIVE_KEY, KEEPALIVE_SECONDS)
    try:
        async with aclosing(run.events(idle_timeout=keepalive)) as events:
            async for event in events:
                if event is None:
                    await out.keepalive()
                elif isinstance(event.item, TextChunk | ToolCallChunk):
                    await out.take(event.item)
                if not run.has_pending:
                    await out.flush()
        return await out.finish()
    except (ConnectionResetError, GatewayError):
        raise
    except Exception:
        if out.stream is None:
            raise
        # The 200 is on the wire: the error can only be told inside the stream.
        log.exception("streaming a response failed", run_id=run.id)
        return await out.fail("internal error while streaming")
    finally:
        if out.stream is not None:
            out.stream.close()


class ResponseStream:
    """One response's SSE stream. It opens (headers, `response.created`) with the first
    output or keep-alive, so a run that fails before that gets a plain HTTP error status;
    after, a failure is the stream's `response.failed` event."""

    def __init__(
        self, request: web.Request, run: Run, builder: ResponseBuilder, save: Save
    ) -> None:
        self._request = request
        self._run = run
        self._builder = builder
        self._save = save
        self._stall = request.app.get(STALL_KEY, CONSUMER_STALL_SECONDS)
        self.stream: EventStream | None = None

    async def keepalive(self) -> None:
        stream = await self._open()
        if events := self._builder.take_events():
            await stream.send_events(*events)
        await stream.comment("keep-alive")

    async def take(self, item: EventItem) -> None:
        """Add a chunk to the response; its events go out with the next `flush`."""
        await self._open()
        _feed(self._builder, item)

    async def flush(self) -> None:
        if self.stream is not None and (events := self._builder.take_events()):
            await self.stream.send_events(*events)

    async def finish(self) -> web.StreamResponse:
        run = self._run
        if run.status != "ok" and self.stream is None:
            raise run_failure(run)
        stream = await self._open()
        failure = None if run.status == "ok" else _failure(run)
        body = self._builder.finish(
            finish_reason=run.finish_reason, usage=run.usage, failure=failure
        )
        await self._save(body)
        return await stream.end_events(*self._builder.take_events())

    async def fail(self, message: str) -> web.StreamResponse:
        stream = await self._open()
        self._builder.error(message)
        return await stream.end_events(*self._builder.take_events())

    async def _open(self) -> EventStream:
        if self.stream is None:
            self.stream = await EventStream.open(self._request, stall_seconds=self._stall)
            self._builder.opening()  # sent with the next write
        return self.stream
