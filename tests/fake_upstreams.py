"""Fake model upstreams for tests: local HTTP servers speaking the real streaming wire formats.

`FakeOpenAI` answers `POST /v1/chat/completions` like the OpenAI Chat Completions API and
`FakeAnthropic` answers `POST /v1/messages` like the Anthropic Messages API, both as SSE
streams with real usage numbers. Each listens on 127.0.0.1 on a random port.

    async with FakeOpenAI(reply=echo_last_user) as up:
        provider = OpenAICompatProvider(provider_config(up, api_key="sk-test"))
        up.status(429, headers={"Retry-After": "0"})  # the next request gets a 429
        up.reset_after(2)  # the one after: 2 deltas, then the TCP connection is aborted
        ...  # any further request: the default reply, streamed word by word
        assert up.requests[0].headers["Authorization"] == "Bearer sk-test"
        await up.wait_disconnect()  # the client hung up while we were still answering

Script: every request gets the next one-shot behaviour queued with `status`, `echo_request`,
`hang`, `reset_after`, `malformed`, `stream`, `error_frame`, `json_answer`, `tool_calls`,
`tool_calls_json` or `steps` (each returns the fake, so calls chain), or the default reply
(`reply`: a string or a function of the request) once the queue is empty. Everything received
is in `requests`, with the JSON body the gateway sent (`json`, `messages`, `tools`, ...).

Tool calls go out in the API's real wire format, every fragment in a write of its own:

    up.tool_calls([FakeCall("call_1", "get_weather", '{"city": "Paris"}')], fragment_chars=4)

OpenAI: `delta.tool_calls` by index (id, type and name first, then `function.arguments`
fragments), `finish_reason: "tool_calls"`; Anthropic: a `tool_use` content block per call,
`input_json_delta` fragments, `content_block_stop`, `stop_reason: "tool_use"`. `interleave`
sends the calls' fragments in turns (OpenAI only: Anthropic streams one block at a time).

Observing the client: `disconnects` counts answers the client abandoned mid-way (the handler
saw `ConnectionResetError` or was cancelled because the connection closed);
`active_streams` / `max_active_streams` count answers in progress. `wait_until(predicate)`
and `wait_disconnect()` wait for those to change without sleeping.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import Any, Literal, Self

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from moltbot.config.model import ApiKind, ModelConfig, ProviderConfig
from tests.upstream_rules import anthropic_problem, openai_problem

DEFAULT_REPLY = "Hello from fake upstream"
FinishName = Literal["stop", "length", "tool_calls"]


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: CIMultiDictProxy[str]  # case-insensitive
    body: bytes
    json: Any  # the parsed body, None when it is not JSON
    query: str = ""  # the query string as sent

    @property
    def messages(self) -> list[dict[str, Any]]:
        messages = self.json.get("messages") if isinstance(self.json, dict) else None
        return messages if isinstance(messages, list) else []

    @property
    def tools(self) -> list[dict[str, Any]] | None:
        return self._field("tools")

    @property
    def tool_choice(self) -> Any:
        return self._field("tool_choice")

    def _field(self, name: str) -> Any:
        return self.json.get(name) if isinstance(self.json, dict) else None

    def last_user_text(self) -> str:
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return _content_text(message.get("content"))
        return ""


ReplyFn = Callable[[RecordedRequest], str]


def echo_last_user(request: RecordedRequest) -> str:
    """A `reply` function: answer with the last user message."""
    return request.last_user_text()


@dataclass(frozen=True)
class FakeUsage:
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


def word_chunks(text: str) -> list[str]:
    """Split into deltas, one per word with its leading whitespace (concatenation = text)."""
    return re.findall(r"\s*\S+\s*$|\s*\S+|\s+", text)


def word_count(text: str) -> int:
    return len(text.split())


def prompt_words(request: RecordedRequest) -> int:
    """The fake's "input tokens": words in the system prompt and all messages."""
    system = request.json.get("system") if isinstance(request.json, dict) else None
    words = sum(word_count(_content_text(m.get("content"))) for m in request.messages)
    return words + word_count(_content_text(system))


def _content_text(content: object) -> str:
    """Message content is a string, or (Anthropic) a list of `{"type": "text", "text": ...}`."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if isinstance(b, dict))
    return ""


# -- scripted answers: text and tool calls --------------------------------------------------


@dataclass(frozen=True)
class FakeCall:
    """A tool call the fake answers with; `arguments` is the JSON text, streamed in pieces."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class TextStep:
    text: str


# What an OpenAI-format step says its `index` is on the wire: None for the real index, a
# number for another one, OMIT for none (some servers repeat 0 or leave it out).
WireIndex = int | Literal["omit"] | None
OMIT: Literal["omit"] = "omit"


@dataclass(frozen=True)
class CallStart:
    """Opens the `index`-th tool call of the answer: its id and name."""

    index: int
    id: str
    name: str
    wire_index: WireIndex = None


@dataclass(frozen=True)
class ArgsStep:
    """A fragment of the `index`-th call's JSON arguments."""

    index: int
    fragment: str
    wire_index: WireIndex = None


Step = TextStep | CallStart | ArgsStep


def fragments(text: str, size: int) -> list[str]:
    """`text` cut into pieces of `size` characters (the last may be shorter)."""
    return [text[i : i + size] for i in range(0, len(text), size)]


def tool_call_steps(
    calls: Sequence[FakeCall], *, text: str = "", fragment_chars: int = 5, interleave: bool = False
) -> list[Step]:
    """Text (word by word), then the calls: each opened, then its arguments in fragments; with
    `interleave`, every call is opened first and the fragments come in turns."""
    steps: list[Step] = [TextStep(chunk) for chunk in word_chunks(text)]
    pieces = [fragments(call.arguments, fragment_chars) for call in calls]
    if not interleave:
        for index, call in enumerate(calls):
            steps.append(CallStart(index, call.id, call.name))
            steps += [ArgsStep(index, piece) for piece in pieces[index]]
        return steps
    steps += [CallStart(index, call.id, call.name) for index, call in enumerate(calls)]
    for turn in range(max((len(p) for p in pieces), default=0)):
        steps += [ArgsStep(i, p[turn]) for i, p in enumerate(pieces) if turn < len(p)]
    return steps


# -- wire formats --------------------------------------------------------------------------


class Wire(ABC):
    """The bytes of one API's answers; the fake's script logic is shared."""

    api: ApiKind
    chat_path: str

    @abstractmethod
    def problem(self, body: Any) -> str | None:
        """What the real API would refuse in this request body (tests/upstream_rules.py)."""

    @abstractmethod
    def opening(self, request: RecordedRequest, usage: FakeUsage) -> bytes: ...

    @abstractmethod
    def delta(self, text: str) -> bytes: ...

    @abstractmethod
    def closing(self, request: RecordedRequest, finish: FinishName, usage: FakeUsage) -> bytes: ...

    @abstractmethod
    def error_frame(self, message: str, error_type: str | None) -> bytes: ...

    @abstractmethod
    def error_body(self, status: int, message: str) -> dict[str, Any]: ...

    @abstractmethod
    def whole_answer(
        self, request: RecordedRequest, text: str, finish: FinishName, usage: FakeUsage
    ) -> dict[str, Any]: ...

    @abstractmethod
    def step_frames(
        self, request: RecordedRequest, steps: Sequence[Step], finish: FinishName, usage: FakeUsage
    ) -> list[bytes]:
        """A whole streamed answer made of `steps`: one SSE frame (one write) per item."""

    @abstractmethod
    def whole_tool_answer(
        self, request: RecordedRequest, text: str, calls: Sequence[FakeCall], usage: FakeUsage
    ) -> dict[str, Any]:
        """The non-streamed JSON of an answer that ends in tool calls."""


def sse_frame(data: object, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    payload = data if isinstance(data, str) else json.dumps(data)
    return f"{head}data: {payload}\n\n".encode()


class OpenAIWire(Wire):
    api: ApiKind = "openai-completions"
    chat_path = "/v1/chat/completions"

    def problem(self, body: Any) -> str | None:
        return openai_problem(body)

    def opening(self, request: RecordedRequest, usage: FakeUsage) -> bytes:
        return self._chunk(request, {"role": "assistant", "content": ""})

    def delta(self, text: str) -> bytes:
        return sse_frame(self._envelope("fake-model", [_choice({"content": text}, None)]))

    def closing(self, request: RecordedRequest, finish: FinishName, usage: FakeUsage) -> bytes:
        return b"".join(self._closing_frames(request, finish, usage))

    def _closing_frames(
        self, request: RecordedRequest, finish: FinishName, usage: FakeUsage
    ) -> list[bytes]:
        frames = [self._chunk(request, {}, finish)]
        options = request.json.get("stream_options") if isinstance(request.json, dict) else None
        if isinstance(options, dict) and options.get("include_usage"):
            model = _model_of(request)
            frames.append(sse_frame({**self._envelope(model, []), "usage": self._usage(usage)}))
        return [*frames, sse_frame("[DONE]")]

    def error_frame(self, message: str, error_type: str | None) -> bytes:
        return sse_frame(self.error_body(500, message, error_type or "server_error"))

    def error_body(
        self, status: int, message: str, error_type: str = "fake_error"
    ) -> dict[str, Any]:
        return {"error": {"message": message, "type": error_type, "param": None, "code": None}}

    def whole_answer(
        self, request: RecordedRequest, text: str, finish: FinishName, usage: FakeUsage
    ) -> dict[str, Any]:
        message = {"role": "assistant", "content": text}
        choice = {"index": 0, "message": message, "finish_reason": finish}
        answer = self._envelope(_model_of(request), [choice])
        return {**answer, "object": "chat.completion", "usage": self._usage(usage)}

    def step_frames(
        self, request: RecordedRequest, steps: Sequence[Step], finish: FinishName, usage: FakeUsage
    ) -> list[bytes]:
        frames = [self.opening(request, usage)]
        for step in steps:
            if isinstance(step, TextStep):
                frames.append(self._chunk(request, {"content": step.text}))
                continue
            wire_index = step.index if step.wire_index is None else step.wire_index
            call: dict[str, Any] = {} if wire_index == OMIT else {"index": wire_index}
            if isinstance(step, CallStart):
                call.update(id=step.id, type="function")
                call["function"] = {"name": step.name, "arguments": ""}
            else:
                call["function"] = {"arguments": step.fragment}
            frames.append(self._chunk(request, {"tool_calls": [call]}))
        return frames + self._closing_frames(request, finish, usage)

    def whole_tool_answer(
        self, request: RecordedRequest, text: str, calls: Sequence[FakeCall], usage: FakeUsage
    ) -> dict[str, Any]:
        message = {
            "role": "assistant",
            "content": text or None,
            "tool_calls": [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
                for c in calls
            ],
        }
        choice = {"index": 0, "message": message, "finish_reason": "tool_calls"}
        answer = self._envelope(_model_of(request), [choice])
        return {**answer, "object": "chat.completion", "usage": self._usage(usage)}

    def _chunk(
        self, request: RecordedRequest, delta: dict[str, Any], finish: str | None = None
    ) -> bytes:
        return sse_frame(self._envelope(_model_of(request), [_choice(delta, finish)]))

    @staticmethod
    def _envelope(model: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": model,
            "choices": choices,
        }

    @staticmethod
    def _usage(usage: FakeUsage) -> dict[str, Any]:
        prompt = usage.input_tokens + usage.cache_read_tokens
        return {
            "prompt_tokens": prompt,
            "completion_tokens": usage.output_tokens,
            "total_tokens": prompt + usage.output_tokens,
            "prompt_tokens_details": {"cached_tokens": usage.cache_read_tokens},
        }


def _choice(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    return {"index": 0, "delta": delta, "finish_reason": finish}


def _model_of(request: RecordedRequest) -> str:
    model = request.json.get("model") if isinstance(request.json, dict) else None
    return model if isinstance(model, str) else "fake-model"


class AnthropicWire(Wire):
    api: ApiKind = "anthropic-messages"
    chat_path = "/v1/messages"

    def problem(self, body: Any) -> str | None:
        return anthropic_problem(body)

    def opening(self, request: RecordedRequest, usage: FakeUsage) -> bytes:
        message = {**self._message(request, []), "usage": self._usage(usage, output_tokens=1)}
        block = {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "text", "text": ""},
        }
        return (
            _event({"type": "message_start", "message": message})
            + _event(block)
            + _event({"type": "ping"})
        )

    def delta(self, text: str) -> bytes:
        delta = {"type": "text_delta", "text": text}
        return _event({"type": "content_block_delta", "index": 0, "delta": delta})

    def closing(self, request: RecordedRequest, finish: FinishName, usage: FakeUsage) -> bytes:
        delta = {"stop_reason": _stop_reason(finish), "stop_sequence": None}
        return (
            _event({"type": "content_block_stop", "index": 0})
            + _event(
                {
                    "type": "message_delta",
                    "delta": delta,
                    "usage": {"output_tokens": usage.output_tokens},
                }
            )
            + _event({"type": "message_stop"})
        )

    def error_frame(self, message: str, error_type: str | None) -> bytes:
        return _event(self.error_body(500, message, error_type or "api_error"))

    def error_body(
        self, status: int, message: str, error_type: str = "fake_error"
    ) -> dict[str, Any]:
        return {"type": "error", "error": {"type": error_type, "message": message}}

    def whole_answer(
        self, request: RecordedRequest, text: str, finish: FinishName, usage: FakeUsage
    ) -> dict[str, Any]:
        message = self._message(request, [{"type": "text", "text": text}])
        return {**message, "stop_reason": _stop_reason(finish), "usage": self._usage(usage)}

    def step_frames(
        self, request: RecordedRequest, steps: Sequence[Step], finish: FinishName, usage: FakeUsage
    ) -> list[bytes]:
        message = {**self._message(request, []), "usage": self._usage(usage, output_tokens=1)}
        frames = [_event({"type": "message_start", "message": message}), _event({"type": "ping"})]
        block = -1  # index of the open content block
        open_kind: str | int | None = None  # "text", or the tool call's index
        for step in steps:
            kind: str | int = "text" if isinstance(step, TextStep) else step.index
            if isinstance(step, ArgsStep) and kind != open_kind:
                raise AssertionError("Anthropic streams one content block at a time")
            if isinstance(step, CallStart) or kind != open_kind:
                if open_kind is not None:
                    frames.append(_event({"type": "content_block_stop", "index": block}))
                block, open_kind = block + 1, kind
                start: dict[str, Any] = {"type": "text", "text": ""}
                if isinstance(step, CallStart):
                    start = {"type": "tool_use", "id": step.id, "name": step.name, "input": {}}
                frames.append(
                    _event({"type": "content_block_start", "index": block, "content_block": start})
                )
            if isinstance(step, TextStep):
                delta: dict[str, Any] = {"type": "text_delta", "text": step.text}
            elif isinstance(step, ArgsStep):
                delta = {"type": "input_json_delta", "partial_json": step.fragment}
            else:
                continue
            frames.append(_event({"type": "content_block_delta", "index": block, "delta": delta}))
        if open_kind is not None:
            frames.append(_event({"type": "content_block_stop", "index": block}))
        end = {"stop_reason": _stop_reason(finish), "stop_sequence": None}
        usage_out = {"output_tokens": usage.output_tokens}
        frames.append(_event({"type": "message_delta", "delta": end, "usage": usage_out}))
        return [*frames, _event({"type": "message_stop"})]

    def whole_tool_answer(
        self, request: RecordedRequest, text: str, calls: Sequence[FakeCall], usage: FakeUsage
    ) -> dict[str, Any]:
        blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
        blocks += [
            {"type": "tool_use", "id": c.id, "name": c.name, "input": json.loads(c.arguments)}
            for c in calls
        ]
        message = self._message(request, blocks)
        return {**message, "stop_reason": "tool_use", "usage": self._usage(usage)}

    @staticmethod
    def _message(request: RecordedRequest, content: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "content": content,
            "model": _model_of(request),
            "stop_reason": None,
            "stop_sequence": None,
        }

    @staticmethod
    def _usage(usage: FakeUsage, output_tokens: int | None = None) -> dict[str, Any]:
        return {
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens if output_tokens is None else output_tokens,
            "cache_read_input_tokens": usage.cache_read_tokens,
            "cache_creation_input_tokens": usage.cache_write_tokens,
        }


def _event(data: dict[str, Any]) -> bytes:
    return sse_frame(data, event=data["type"])


def _stop_reason(finish: FinishName) -> str:
    return {"length": "max_tokens", "tool_calls": "tool_use"}.get(finish, "end_turn")


# -- the fake server -----------------------------------------------------------------------

Behaviour = Callable[[web.Request, RecordedRequest], Awaitable[web.StreamResponse]]
ChunksFor = Callable[[RecordedRequest], list[str]]


@dataclass
class Turn:
    """One streamed answer in progress, as the endings below see it."""

    request: web.Request
    recorded: RecordedRequest
    response: web.StreamResponse
    finish: FinishName
    usage: FakeUsage


# What a stream does after its deltas: finish properly, or misbehave.
Ending = Callable[[Turn], Awaitable[None]]


class FakeUpstream:
    """The server and its script; `FakeOpenAI` / `FakeAnthropic` pick the wire format."""

    wire: Wire

    def __init__(self, reply: str | ReplyFn = DEFAULT_REPLY, *, strict: bool = True) -> None:
        self.reply = reply  # the default answer once the queue is empty
        # strict: refuse, with a 400 as the real API does, a request breaking its rules on
        # tool rounds, tools and images (tests/upstream_rules.py); `refusals` says why.
        self.strict = strict
        self.refusals: list[str] = []
        self.requests: list[RecordedRequest] = []
        self.disconnects = 0
        self.active_streams = 0
        self.max_active_streams = 0
        self.port = 0
        self._queue: deque[Behaviour] = deque()
        self._changed = asyncio.Event()
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        """What a provider config's `baseUrl` should be."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pending(self) -> int:
        """Queued one-shot behaviours not used yet."""
        return len(self._queue)

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        # Real APIs take requests of tens of MB (images); aiohttp's default would be 1 MB.
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # handler_cancellation: a handler learns at once (CancelledError) that the client left.
        self._runner = web.AppRunner(
            app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0
        )
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closing.set()  # releases hanging and paused answers
        if self._runner is not None:
            await self._runner.cleanup()

    # -- the script: one-shot behaviours for the next requests, in order ---------------------

    def status(
        self,
        code: int,
        body: str | Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Self:
        """Answer with this HTTP status. `body`: JSON object or raw text; default: the API's
        own error shape with message "fake error <code>"."""
        return self._enqueue(partial(self._send_status, code, body, dict(headers or {})))

    def echo_request(self, code: int) -> Self:
        """Answer with this HTTP status and an error message that repeats the request's query
        string and every header it carried (a careless proxy's error page)."""
        return self._enqueue(partial(self._send_echo, code))

    def hang(self, after_chunks: int | None = None) -> Self:
        """Never answer (or: stream `after_chunks` deltas, then stall) until the client leaves."""
        if after_chunks is None:
            return self._enqueue(self._hang_silently)
        return self._enqueue_stream(self._reply_chunks(after_chunks), ending=self._stall)

    def reset_after(self, n_chunks: int) -> Self:
        """Stream `n_chunks` deltas, then abort the TCP connection."""
        return self._enqueue_stream(self._reply_chunks(n_chunks), ending=self._reset)

    def malformed(self, after_chunks: int = 0) -> Self:
        """Stream `after_chunks` deltas, then a `data:` line that is not JSON."""
        return self._enqueue_stream(self._reply_chunks(after_chunks), ending=self._malformed)

    def error_frame(
        self,
        message: str = "fake stream error",
        error_type: str | None = None,
        after_chunks: int = 0,
    ) -> Self:
        """Stream `after_chunks` deltas, then the API's in-stream error event, then end.
        `error_type`: e.g. "overloaded_error" (Anthropic); default: a generic server error."""
        ending = partial(self._error, message, error_type)
        return self._enqueue_stream(self._reply_chunks(after_chunks), ending=ending)

    def stream(
        self,
        chunks: Sequence[str],
        delay: float = 0.0,
        finish: FinishName = "stop",
        usage: FakeUsage | None = None,
    ) -> Self:
        """Stream exactly these deltas, `delay` seconds before each, then finish properly."""
        fixed = list(chunks)
        return self._enqueue_stream(lambda _: fixed, delay=delay, finish=finish, usage=usage)

    def json_answer(self, text: str | None = None, finish: FinishName = "stop") -> Self:
        """A plain (non-SSE) JSON completion, as when a server ignores `stream: true`."""
        return self._enqueue(partial(self._send_json_answer, text, finish))

    def tool_calls(
        self,
        calls: Sequence[FakeCall],
        *,
        text: str = "",
        fragment_chars: int = 5,
        interleave: bool = False,
        usage: FakeUsage | None = None,
    ) -> Self:
        """A streamed answer: `text` (word by word), then the calls, their arguments in
        fragments of `fragment_chars`; it ends with the API's tool-call stop reason."""
        steps = tool_call_steps(
            calls, text=text, fragment_chars=fragment_chars, interleave=interleave
        )
        return self.steps(steps, finish="tool_calls", usage=usage)

    def steps(
        self, steps: Sequence[Step], finish: FinishName = "stop", usage: FakeUsage | None = None
    ) -> Self:
        """A streamed answer of exactly these steps, in this order, then the ending."""
        return self._enqueue(partial(self._send_steps, list(steps), finish, usage))

    def tool_calls_json(self, calls: Sequence[FakeCall], text: str = "") -> Self:
        """A non-streamed JSON answer ending in tool calls (a server that ignores `stream`)."""
        return self._enqueue(partial(self._send_tool_json, list(calls), text))

    # -- observing the client ------------------------------------------------------------------

    # A default timeout on purpose: a broken test fails in seconds instead of hanging.
    async def wait_until(
        self,
        predicate: Callable[[], bool],
        timeout: float = 5.0,
    ) -> None:
        """Wait until `predicate()` holds; it is re-checked whenever a request arrives or an
        answer starts or ends."""
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    await self._changed.wait()
        except TimeoutError:
            raise TimeoutError(f"fake upstream: condition not met within {timeout}s") from None

    async def wait_disconnect(self, count: int = 1, timeout: float = 5.0) -> None:
        """Wait until the client abandoned `count` answers in total."""
        await self.wait_until(lambda: self.disconnects >= count, timeout)

    # -- request handling ---------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        recorded = await _record(request)
        self.requests.append(recorded)
        self._notify()
        if request.path != self.wire.chat_path:
            body = self.wire.error_body(404, f"no route {request.path}")
            return web.json_response(body, status=404)
        if self.strict and (problem := self.wire.problem(recorded.json)) is not None:
            self.refusals.append(problem)  # the scripted answer stays for the next request
            body = self.wire.error_body(400, problem, "invalid_request_error")
            return web.json_response(body, status=400)
        behaviour = self._queue.popleft() if self._queue else self._default_behaviour()
        self._set_active(+1)
        try:
            return await behaviour(request, recorded)
        except asyncio.CancelledError:
            self._client_left()  # handler_cancellation: the connection was lost
            raise
        finally:
            self._set_active(-1)

    def _default_behaviour(self) -> Behaviour:
        return partial(self._send_stream, self._default_chunks)

    def _default_chunks(self, recorded: RecordedRequest) -> list[str]:
        return word_chunks(self._reply_text(recorded))

    def _reply_text(self, recorded: RecordedRequest) -> str:
        return self.reply(recorded) if callable(self.reply) else self.reply

    def _reply_chunks(self, n: int) -> ChunksFor:
        """The first `n` deltas of the default reply, cycled if it is shorter (misbehaviours
        send some text first)."""

        def chunks(recorded: RecordedRequest) -> list[str]:
            words = word_chunks(self._reply_text(recorded)) or ["x"]
            return [words[i % len(words)] for i in range(n)]

        return chunks

    def _enqueue(self, behaviour: Behaviour) -> Self:
        self._queue.append(behaviour)
        return self

    def _enqueue_stream(self, chunks: ChunksFor, **options: Any) -> Self:
        return self._enqueue(partial(self._send_stream, chunks, **options))

    async def _send_status(
        self,
        code: int,
        body: str | Mapping[str, Any] | None,
        headers: dict[str, str],
        request: web.Request,
        recorded: RecordedRequest,
    ) -> web.StreamResponse:
        if isinstance(body, str):
            return web.Response(status=code, text=body, headers=headers)
        document = (
            dict(body) if body is not None else self.wire.error_body(code, f"fake error {code}")
        )
        return web.json_response(document, status=code, headers=headers)

    async def _send_echo(
        self, code: int, request: web.Request, recorded: RecordedRequest
    ) -> web.StreamResponse:
        sent = " ".join(f"{name}: {value}" for name, value in request.headers.items())
        message = f"query: {request.query_string} headers: {sent}"
        return web.json_response(self.wire.error_body(code, message), status=code)

    async def _hang_silently(
        self, request: web.Request, recorded: RecordedRequest
    ) -> web.StreamResponse:
        await self._closing.wait()
        return web.Response(status=503)

    async def _send_json_answer(
        self, text: str | None, finish: FinishName, request: web.Request, recorded: RecordedRequest
    ) -> web.StreamResponse:
        reply = self._reply_text(recorded) if text is None else text
        usage = FakeUsage(prompt_words(recorded), word_count(reply))
        return web.json_response(self.wire.whole_answer(recorded, reply, finish, usage))

    async def _send_steps(
        self,
        steps: list[Step],
        finish: FinishName,
        usage: FakeUsage | None,
        request: web.Request,
        recorded: RecordedRequest,
    ) -> web.StreamResponse:
        words = "".join(s.text for s in steps if isinstance(s, TextStep))
        usage = usage or FakeUsage(prompt_words(recorded), word_count(words) + 1)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        try:
            await response.prepare(request)
            for frame in self.wire.step_frames(recorded, steps, finish, usage):
                await response.write(frame)
        except ConnectionResetError:
            self._client_left()
        return response

    async def _send_tool_json(
        self,
        calls: list[FakeCall],
        text: str,
        request: web.Request,
        recorded: RecordedRequest,
    ) -> web.StreamResponse:
        usage = FakeUsage(prompt_words(recorded), word_count(text) + len(calls))
        return web.json_response(self.wire.whole_tool_answer(recorded, text, calls, usage))

    async def _send_stream(
        self,
        chunks_for: ChunksFor,
        request: web.Request,
        recorded: RecordedRequest,
        *,
        delay: float = 0.0,
        finish: FinishName = "stop",
        usage: FakeUsage | None = None,
        ending: Ending | None = None,
    ) -> web.StreamResponse:
        chunks = chunks_for(recorded)
        usage = usage or FakeUsage(prompt_words(recorded), word_count("".join(chunks)))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        turn = Turn(request, recorded, response, finish, usage)
        try:
            await response.prepare(request)
            await response.write(self.wire.opening(recorded, usage))
            for chunk in chunks:
                await self._pause(delay)
                await response.write(self.wire.delta(chunk))
            await (ending or self._finish)(turn)
        except ConnectionResetError:
            self._client_left()  # a write found the connection closed
        return response

    # -- stream endings -------------------------------------------------------------------------

    async def _finish(self, turn: Turn) -> None:
        await turn.response.write(self.wire.closing(turn.recorded, turn.finish, turn.usage))

    async def _stall(self, turn: Turn) -> None:
        await self._closing.wait()

    async def _reset(self, turn: Turn) -> None:
        if turn.request.transport is not None:
            turn.request.transport.abort()

    async def _malformed(self, turn: Turn) -> None:
        await turn.response.write(b"data: {this is not json\n\n")

    async def _error(self, message: str, error_type: str | None, turn: Turn) -> None:
        await turn.response.write(self.wire.error_frame(message, error_type))

    # -- bookkeeping ----------------------------------------------------------------------------

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake early when the fake shuts down."""
        if seconds > 0:
            try:
                await asyncio.wait_for(self._closing.wait(), seconds)
            except TimeoutError:
                pass

    def _set_active(self, change: int) -> None:
        self.active_streams += change
        self.max_active_streams = max(self.max_active_streams, self.active_streams)
        self._notify()

    def _client_left(self) -> None:
        if not self._closing.is_set():  # our own shutdown cancels handlers too
            self.disconnects += 1
            self._notify()

    def _notify(self) -> None:
        # Wake every waiter, then start a fresh event for the next change.
        self._changed.set()
        self._changed = asyncio.Event()


class FakeOpenAI(FakeUpstream):
    """OpenAI Chat Completions: `base_url` ends in /v1, as the provider config expects."""

    wire = OpenAIWire()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


class FakeAnthropic(FakeUpstream):
    """Anthropic Messages: `base_url` without /v1 (the client appends /v1/messages)."""

    wire = AnthropicWire()


async def _record(request: web.Request) -> RecordedRequest:
    body = await request.read()
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        parsed = None
    headers = CIMultiDictProxy(CIMultiDict(request.headers))
    return RecordedRequest(
        request.method, request.path, headers, body, parsed, request.query_string
    )


def provider_config(
    up: FakeUpstream,
    name: str = "up",
    models: Sequence[str | ModelConfig] = ("m1",),
    *,
    api_key: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> ProviderConfig:
    """A provider config pointing at `up`, with the API kind it speaks. `models`: ids (each
    becomes a default `ModelConfig`) or full `ModelConfig`s."""
    return ProviderConfig(
        name=name,
        base_url=up.base_url,
        api=up.wire.api,
        api_key=api_key,
        headers=tuple((headers or {}).items()),
        models=tuple(_model(model) for model in models),
    )


def _model(model: str | ModelConfig) -> ModelConfig:
    return model if isinstance(model, ModelConfig) else ModelConfig(id=model, name=model)
