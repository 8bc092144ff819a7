"""A fake OpenAI Chat Completions server whose answers call tools, in the real wire format.

A streamed tool-call answer is what the OpenAI API sends: a role chunk, then per call a chunk
with `delta.tool_calls[{index, id, type: "function", function: {name, arguments: ""}}]`, then
chunks carrying fragments of `function.arguments` under the same index, a chunk with
`finish_reason: "tool_calls"`, the usage chunk (`choices: []`) when `stream_options.
include_usage` is set, and `data: [DONE]`. Text answers stream `delta.content` and finish with
"stop".

    def script(request: SeenRequest) -> Reply:
        if not request.tool_results():
            return Reply(calls=(Call("read", {"path": "notes.txt"}),))
        return Reply(text="The file says " + request.tool_results()[0])

    async with ToolUpstream(script) as up:
        provider = tool_provider(up)  # a ProviderConfig for make_config(...)
        ...
        assert up.requests[1].tool_names() == [...]

The script sees every request (`SeenRequest`) and returns the `Reply` to stream; `Reply.hold`
keeps the answer open (after its text) until `release()` or the client goes away.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from moltbot.config.model import ModelConfig, ProviderConfig


@dataclass(frozen=True)
class Call:
    name: str
    arguments: dict[str, Any] | str = field(default_factory=dict)
    id: str | None = None

    def arguments_text(self) -> str:
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(self.arguments)


@dataclass(frozen=True)
class Reply:
    text: str = ""
    calls: tuple[Call, ...] = ()
    hold: bool = False  # stay open after the text until released (or the client leaves)


@dataclass(frozen=True)
class SeenRequest:
    body: dict[str, Any]

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages") or [])

    def tool_names(self) -> list[str]:
        return [t["function"]["name"] for t in self.body.get("tools") or []]

    def tool_results(self) -> list[str]:
        """The contents of the tool messages after the last assistant message."""
        results: list[str] = []
        for message in self.messages:
            if message.get("role") == "assistant":
                results = []
            elif message.get("role") == "tool":
                results.append(message.get("content") or "")
        return results

    def system(self) -> str:
        first = self.messages[0] if self.messages else {}
        return first.get("content") or "" if first.get("role") == "system" else ""

    def last_user(self) -> str:
        for message in reversed(self.messages):
            if message.get("role") == "user":
                content = message.get("content")
                return content if isinstance(content, str) else ""
        return ""


Script = Callable[[SeenRequest], Reply]


def in_order(*replies: Reply, then: str = "done") -> Script:
    """A script giving `replies` to the requests in turn, then the text `then` to any more."""
    queue = list(replies)

    def script(request: SeenRequest) -> Reply:
        return queue.pop(0) if queue else Reply(text=then)

    return script


class ToolUpstream:
    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests: list[SeenRequest] = []
        self.disconnects = 0
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._release = asyncio.Event()
        self._closing = asyncio.Event()
        self._calls = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def release(self) -> None:
        """Let held answers finish."""
        self._release.set()

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
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
        self._closing.set()
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        seen = SeenRequest(await request.json())
        self.requests.append(seen)
        reply = self.script(seen)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            await self._stream(response, seen, reply)
        except ConnectionResetError:
            self.disconnects += 1
        except asyncio.CancelledError:  # handler_cancellation: the client went away
            if not self._closing.is_set():
                self.disconnects += 1
            raise
        return response

    async def _stream(self, response: web.StreamResponse, seen: SeenRequest, reply: Reply) -> None:
        model = seen.body.get("model", "fake-model")
        await response.write(_frame(_chunk(model, {"role": "assistant", "content": None})))
        for piece in _pieces(reply.text):
            await response.write(_frame(_chunk(model, {"content": piece})))
        if reply.hold:
            await self._release.wait()
        for index, call in enumerate(reply.calls):
            self._calls += 1
            opening = {
                "index": index,
                "id": call.id or f"call_fake_{self._calls}",
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            await response.write(_frame(_chunk(model, {"tool_calls": [opening]})))
            for piece in _pieces(call.arguments_text(), size=7):
                fragment = {"index": index, "function": {"arguments": piece}}
                await response.write(_frame(_chunk(model, {"tool_calls": [fragment]})))
        finish = "tool_calls" if reply.calls else "stop"
        await response.write(_frame(_chunk(model, {}, finish)))
        options = seen.body.get("stream_options") or {}
        if options.get("include_usage"):
            usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
            await response.write(_frame({**_envelope(model, []), "usage": usage}))
        await response.write(b"data: [DONE]\n\n")


def _pieces(text: str, size: int = 12) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def _envelope(model: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake-tools",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": model,
        "choices": choices,
    }


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return _envelope(model, [{"index": 0, "delta": delta, "finish_reason": finish}])


def _frame(data: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(data)}\n\n".encode()


def tool_provider(up: ToolUpstream, name: str = "up") -> ProviderConfig:
    return ProviderConfig(
        name=name,
        base_url=up.base_url,
        api="openai-completions",
        models=(ModelConfig(id="m1", name="m1"),),
    )
