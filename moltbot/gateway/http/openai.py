"""POST /v1/chat/completions: an OpenAI-compatible front door to an ordinary agent run.

The handler parses the request, picks the agent and session, starts the run through the runtime
and turns the run's events into one JSON answer or an SSE stream. A stream is written event by
event: while the client reads slowly the writes wait, the run's bounded buffer fills and the run
stops reading from its upstream; a client that takes nothing for the stall limit is cut off.
"""

from __future__ import annotations

import uuid
from contextlib import aclosing
from dataclasses import replace

import orjson
from aiohttp import web

from moltbot.agents.events import TextChunk, ToolCallChunk
from moltbot.agents.run import CONSUMER_STALL_SECONDS
from moltbot.agents.runtime import InvalidTurn, Run, TurnRequest
from moltbot.gateway.access_log import tags
from moltbot.gateway.errors import GatewayError, InvalidRequest, error_body
from moltbot.gateway.http.body import read_json
from moltbot.gateway.http.image_fetch import fetch_images
from moltbot.gateway.http.limits import SESSION_KEY_HEADER, check_identity_fields
from moltbot.gateway.http.protocol import (
    ChatCompletionRequest,
    ChunkEncoder,
    completion_body,
    parse_chat_request,
)
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

__all__ = ["KEEPALIVE_KEY", "STALL_KEY", "chat_completions"]


async def chat_completions(request: web.Request) -> web.StreamResponse:
    request.app[AUTH_KEY].check_request(request)
    images = request.app[CONFIG_KEY].gateway.http.images
    chat = parse_chat_request(await read_json(request), fetch_image_urls=images.allow_url)
    check_identity_fields(chat.user, request.headers.get(SESSION_KEY_HEADER))
    runtime = request.app[RUNTIME_KEY]
    agent_id = resolve_agent(request, chat.model, runtime.agents)
    session_key, ephemeral = resolve_session(request, agent_id, chat.user, runtime.agents)
    if chat.turn.image_urls:  # after routing: a request for an unknown agent fetches nothing
        fetched = await fetch_images(chat.turn.image_urls, images, chat.turn.image_bytes)
        chat = replace(chat, turn=chat.turn.with_images(fetched))
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    turn = TurnRequest(
        input=chat.turn.input,
        context=chat.turn.context,
        tools=chat.tools,
        session_key=session_key,
        agent_id=agent_id,
        run_id=completion_id,
        extra_system_prompt=chat.turn.system,
        sampling=chat.sampling,
        model_ref=model_override(request),
        ephemeral=ephemeral,
        keep_after_end=False,
    )
    try:
        run = runtime.start(turn)
    except InvalidTurn as exc:
        raise InvalidRequest(str(exc), param=_refused_param(request, exc), code=exc.code) from None
    tags(request).agent, tags(request).session_key = run.agent.id, session_key
    try:
        if chat.stream:
            return await stream_completion(request, run, chat)
        return await complete(run, chat)
    finally:  # the model that answered, for the access log
        tags(request).model = run.model_ref or turn.model_ref


def _refused_param(request: web.Request, exc: InvalidTurn) -> str:
    if exc.code in ("empty_message", "image_input_unsupported"):
        return "messages"  # an empty message, or images for a text-only model
    if exc.code == "model_not_allowed":
        return MODEL_HEADER
    if exc.code == "tool_name_clash":
        return "tools"
    # Else the session key's agent is unknown or does not match the model's.
    return SESSION_KEY_HEADER if SESSION_KEY_HEADER in request.headers else "model"


async def complete(run: Run, chat: ChatCompletionRequest) -> web.Response:
    async with aclosing(run.events()) as events:
        async for _ in events:
            pass
    if run.status != "ok":
        raise run_failure(run)
    answer = run.answer
    body = completion_body(
        run.id, chat.model, answer.text, run.finish_reason, run.usage, answer.tool_calls
    )
    return web.Response(body=orjson.dumps(body), content_type="application/json")


async def stream_completion(
    request: web.Request, run: Run, chat: ChatCompletionRequest
) -> web.StreamResponse:
    """Relay the run as SSE chunks as its deltas arrive. Deltas that arrived together (a
    provider's burst, read in one go) leave in one write: the same bytes, fewer syscalls."""
    out = CompletionStream(request, run, chat)
    keepalive = request.app.get(KEEPALIVE_KEY, KEEPALIVE_SECONDS)
    try:
        async with aclosing(run.events(idle_timeout=keepalive)) as events:
            async for event in events:
                item = event.item if event is not None else None
                if event is None:
                    await out.keepalive()
                elif isinstance(item, TextChunk):
                    await out.delta(item.text)
                elif isinstance(item, ToolCallChunk):
                    await out.tool_call(item)
                if not run.has_pending:
                    await out.flush()
        return await out.finish()
    except (ConnectionResetError, GatewayError):
        raise
    except Exception:
        if out.stream is None:
            raise
        # The 200 is on the wire: the error can only be told inside the stream.
        log.exception("streaming a completion failed", run_id=run.id)
        return await out.fail(GatewayError("internal error while streaming"))
    finally:
        if out.stream is not None:
            out.stream.close()


class CompletionStream:
    """One completion's SSE response. Headers go out with the first delta (or keep-alive),
    so a run that fails before it still gets a plain HTTP error status."""

    def __init__(self, request: web.Request, run: Run, chat: ChatCompletionRequest) -> None:
        self._request = request
        self._run = run
        self._include_usage = chat.include_usage
        self._encoder = ChunkEncoder(run.id, chat.model)
        self._stall = request.app.get(STALL_KEY, CONSUMER_STALL_SECONDS)
        self.stream: EventStream | None = None
        self._role_sent = False
        # Frames not yet written: at most what the run had buffered (RUN_BUFFER_BYTES).
        self._unsent: list[bytes] = []

    async def keepalive(self) -> None:
        await self.flush()
        await (await self._open()).comment("keep-alive")

    async def delta(self, text: str) -> None:
        await self._open()
        self._unsent += (*self._role(), self._encoder.content(text))

    async def tool_call(self, chunk: ToolCallChunk) -> None:
        await self._open()
        frame = self._encoder.tool_call(chunk.index, chunk.id, chunk.name, chunk.arguments)
        self._unsent += (*self._role(), frame)

    async def flush(self) -> None:
        """Write the frames taken so far, in one write."""
        if self._unsent and self.stream is not None:
            frames, self._unsent = self._unsent, []
            await self.stream.send_json(*frames)

    async def finish(self) -> web.StreamResponse:
        run = self._run
        if run.status != "ok":
            if self.stream is None:
                raise run_failure(run)
            return await self.fail(run_failure(run))
        stream = await self._open()
        frames = [*self._take_unsent(), *self._role(), self._encoder.finish(run.finish_reason)]
        if self._include_usage:
            frames.append(self._encoder.usage(run.usage))
        return await stream.done(*frames)

    async def fail(self, failure: GatewayError) -> web.StreamResponse:
        stream = await self._open()
        body = error_body(failure.message, failure.type, code=failure.code)
        return await stream.done(*self._take_unsent(), orjson.dumps(body))

    def _take_unsent(self) -> list[bytes]:
        frames, self._unsent = self._unsent, []
        return frames

    async def _open(self) -> EventStream:
        if self.stream is None:
            self.stream = await EventStream.open(self._request, stall_seconds=self._stall)
        return self.stream

    def _role(self) -> tuple[bytes, ...]:
        """The role chunk, before the first content of the stream."""
        if self._role_sent:
            return ()
        self._role_sent = True
        return (self._encoder.role(),)
