"""The agent's tool loop: the model answers, the agent's tools it called run, their results go
back to the model, and again, until it answers without calling one of them.

Each model call streams. Its text goes to the client as it comes (a blank line between the
text of two rounds, so streamed and whole answers read the same); its calls to the client's
tools (a request's `tools`) are relayed as tool-call fragments; its calls to the agent's own
tools are not: those run here, and WebSocket followers see them as `tool` events (`start` with
the arguments, `result` with ok/error and a short summary).

- Calls of one answer run in order; consecutive calls of tools that only read run side by side.
- Tool failures (a refused path, a failing command, bad JSON arguments, a tool that does not
  exist or is not allowed) are results the model reads, never a failed run. Only cancellation
  (abort, the run's timeout) ends the run while a tool works, and it kills what the tool started.
- Bounds: at most `agents.defaults.maxToolRounds` rounds of tool calls. After the last one the
  model is called once more without the agent's tools, to answer with what it has; a call it
  makes anyway is answered "not run" and the run ends. The run's timeout covers the whole loop;
  the results of one run together are kept to MAX_RESULT_CHARS.
- A call to a client tool ends the run with finish_reason "tool_calls": the client runs it and
  sends the result as its next turn. Agent-tool calls of that same answer run first (their
  results are stored, so the session holds the whole exchange); the client sees only its own
  calls. tool_choice applies to the first model call; a later one that was "required" or named
  is "auto", else the loop could never end.

Every answer and every result is appended to `run.steps` as soon as it exists (an answer cut
short by an abort too); the runtime stores the turn's input and its steps in one write.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

from moltbot.agents.events import EventItem, TextChunk, ToolCallChunk, ToolFinished, ToolStarted
from moltbot.agents.run import Answer, Run
from moltbot.content import Message, TextPart, ToolCall, ToolChoice, ToolSet
from moltbot.logs import get_logger
from moltbot.providers.base import Finish, ModelRequest, TextDelta, ToolCallDelta, Usage
from moltbot.providers.failover import FailoverStream
from moltbot.tools.base import AgentTool, ToolContext, ToolError, ToolResult
from moltbot.tools.toolbox import definitions

log = get_logger("moltbot.agents")

MAX_RESULT_CHARS = 2_000_000  # all tool results of one run together
LAST_ROUND_NOTE = (
    "You have used all the tool rounds this turn allows. Answer now with what you have; "
    "your own tools are not available any more in this turn."
)

Relay = Callable[[EventItem], Awaitable[None]]
OpenStream = Callable[[ModelRequest], FailoverStream]


@dataclass(slots=True)
class _Routing:
    """Where one answer's tool calls go: the client's are relayed under their index in the
    client's reply; the agent's are not relayed. A call is routed once its name is known."""

    client_index: dict[int, int | None] = field(default_factory=dict)  # None: an agent call
    held: dict[int, list[ToolCallChunk]] = field(default_factory=dict)  # name not known yet
    ids: dict[int, str] = field(default_factory=dict)


class ToolLoop:
    def __init__(
        self,
        run: Run,
        request: ModelRequest,
        *,
        open_stream: OpenStream,
        relay: Relay,
        tools: tuple[AgentTool, ...],
        context: ToolContext,
        max_rounds: int,
    ) -> None:
        self._run = run
        self._request = request  # the first call's request; its `tools` are the client's
        self._open = open_stream
        self._relay = relay
        self._tools = {tool.name: tool for tool in tools}
        self._definitions = definitions(tools)
        self._ctx = context
        self._max_rounds = max_rounds
        self._client_names = frozenset(t.name for t in request.tools.tools)
        self._client_calls = 0  # client calls relayed so far: the next one's index
        self._result_chars = 0

    async def run(self) -> None:
        messages = list(self._request.messages)
        rounds = 0
        while True:
            last = rounds >= self._max_rounds
            answer, finish = await self._answer(self._model_request(messages, rounds, last))
            own = [c for c in answer.tool_calls if c.name not in self._client_names]
            to_client = len(own) < len(answer.tool_calls)
            messages.append(answer.message())
            if own:
                messages += self._not_run(own) if last else await self._run_calls(own)
            if not own or last or to_client:
                self._run.finish_reason = "tool_calls" if to_client else _plain(finish)
                return
            rounds += 1

    def _model_request(self, messages: list[Message], rounds: int, last: bool) -> ModelRequest:
        client = self._request.tools
        offered = client.tools if last else client.tools + self._definitions
        choice = client.choice if rounds == 0 else _later_choice(client.choice)
        system = self._request.system
        if last and self._tools:
            system = f"{system}\n\n{LAST_ROUND_NOTE}" if system else LAST_ROUND_NOTE
        return replace(
            self._request,
            system=system,
            messages=tuple(messages),
            tools=ToolSet(offered, choice if offered else None, client.parallel),
        )

    # -- one model call ---------------------------------------------------------------------

    async def _answer(self, request: ModelRequest) -> tuple[Answer, str]:
        """Stream one model call: its text and client calls to the client, all of it into the
        answer returned (and into run.steps, even when cut short)."""
        run = self._run
        answer = Answer()
        routing = _Routing()
        finish = "stop"
        gap = bool(run.answer.text)  # earlier rounds' text: a blank line before this one's
        stream = self._open(request)
        try:
            async for item in stream:
                run.model_ref = stream.model_ref
                if isinstance(item, TextDelta):
                    delta = item.text if item.text.isascii() else valid_text(item.text)
                    if not delta:
                        continue
                    answer.add_text(delta)
                    if gap:
                        delta, gap = "\n\n" + delta, False
                    run.answer.add_text(delta)
                    await self._relay(TextChunk(delta))
                elif isinstance(item, ToolCallDelta):
                    arguments = valid_text(item.arguments)
                    chunk = answer.add_tool_call(item.index, item.id, item.name, arguments)
                    await self._route(chunk, routing)
                elif isinstance(item, Usage):
                    run.usage = item if run.usage is None else _sum(run.usage, item)
                elif isinstance(item, Finish):
                    finish = item.reason
        finally:
            await stream.aclose()
            run.steps.append(answer.message())
        return answer, finish

    async def _route(self, chunk: ToolCallChunk, routing: _Routing) -> None:
        index = chunk.index
        if chunk.id is not None:
            routing.ids[index] = chunk.id
        if index in routing.client_index:
            chunks, name = [chunk], None
        elif not chunk.name:
            routing.held.setdefault(index, []).append(chunk)
            return
        else:
            name = chunk.name
            is_client = name in self._client_names
            routing.client_index[index] = self._client_calls if is_client else None
            self._client_calls += is_client
            chunks = [*routing.held.pop(index, ()), chunk]
        target = routing.client_index[index]
        if target is None:
            return
        for part in chunks:
            # The client's reply numbers its calls 0, 1, ... whatever the answer's indexes.
            out = self._run.answer.add_tool_call(target, routing.ids[index], name, part.arguments)
            name = None
            await self._relay(out)

    # -- the agent's tools -----------------------------------------------------------------

    async def _run_calls(self, calls: list[ToolCall]) -> list[Message]:
        results: list[Message] = []
        for batch in self._batches(calls):
            if len(batch) == 1:
                done = [await self._call(batch[0])]
            else:
                done = list(await asyncio.gather(*(self._call(call) for call in batch)))
            results += done
            self._run.steps.extend(done)
        return results

    def _batches(self, calls: list[ToolCall]) -> list[list[ToolCall]]:
        """Calls in order; consecutive calls of parallel-safe tools share a batch."""
        batches: list[list[ToolCall]] = []
        for call in calls:
            if self._parallel_safe(call) and batches and self._parallel_safe(batches[-1][-1]):
                batches[-1].append(call)
            else:
                batches.append([call])
        return batches

    def _parallel_safe(self, call: ToolCall) -> bool:
        tool = self._tools.get(call.name)
        return tool is not None and tool.parallel_safe

    async def _call(self, call: ToolCall) -> Message:
        await self._relay(ToolStarted(call.id, call.name, call.arguments))
        started = time.monotonic()
        result = self._within_budget(await self._execute(call))
        took = int((time.monotonic() - started) * 1000)
        await self._relay(ToolFinished(call.id, call.name, result.ok, result.summary, took))
        return _result_message(call, result.content, error=not result.ok)

    async def _execute(self, call: ToolCall) -> ToolResult:
        tool = self._tools.get(call.name)
        if tool is None:
            names = ", ".join(self._tools) or "none"
            return ToolResult.failure(
                f"there is no tool {call.name!r} available to this agent (available: {names})"
            )
        try:
            args = json.loads(call.arguments) if call.arguments.strip() else {}
        except ValueError as exc:
            return ToolResult.failure(f"the arguments of {call.name} are not valid JSON: {exc}")
        if not isinstance(args, dict):
            return ToolResult.failure(f"the arguments of {call.name} must be a JSON object")
        try:
            return await tool.run(args, self._ctx)
        except ToolError as exc:
            return ToolResult.failure(str(exc))
        except Exception as exc:  # a bug in a tool must not fail the run
            log.exception("tool failed", tool=call.name, run_id=self._run.id)
            return ToolResult.failure(f"{call.name} failed: internal error ({type(exc).__name__})")

    def _within_budget(self, result: ToolResult) -> ToolResult:
        self._result_chars += len(result.content)
        if self._result_chars <= MAX_RESULT_CHARS:
            return result
        return ToolResult.failure(
            f"result dropped: the tool results of this turn passed {MAX_RESULT_CHARS} characters"
        )

    def _not_run(self, calls: list[ToolCall]) -> list[Message]:
        note = (
            f"error: not run: this turn used its {self._max_rounds} tool rounds "
            "(agents.defaults.maxToolRounds)"
        )
        results = [_result_message(call, note, error=True) for call in calls]
        self._run.steps.extend(results)
        return results


def reads_as_reply(history: list[Message], message: Message) -> bool:
    """Whether `message` is a client's copy of the session's last reply. A reply with tool
    rounds reads as its answers' texts a blank line apart, while the session stores each
    answer apart: the copy is the last few stored answers joined that way."""
    if message.role != "assistant" or message.tool_calls or not history:
        return False
    if history[-1].role != "assistant":
        return False
    texts: list[str] = []
    for stored in reversed(history):
        if stored.role == "user":
            return False
        if stored.role == "assistant" and stored.text:
            texts.insert(0, stored.text)
            if "\n\n".join(texts) == message.text:
                return True
    return False


def _result_message(call: ToolCall, content: str, *, error: bool) -> Message:
    return Message("tool", (TextPart(content),), tool_call_id=call.id, is_error=error)


def _later_choice(choice: ToolChoice | None) -> ToolChoice | None:
    return choice if choice in (None, "auto", "none") else "auto"


def _plain(finish: str) -> str:
    """An answer that ends the loop without a client call is not a tool-call answer (some
    servers say "tool_calls" all the same)."""
    return "stop" if finish == "tool_calls" else finish


def _sum(a: Usage, b: Usage) -> Usage:
    """Usage over the loop's model calls: every token the turn cost."""
    return Usage(
        a.input_tokens + b.input_tokens,
        a.output_tokens + b.output_tokens,
        a.cache_read_tokens + b.cache_read_tokens,
        a.cache_write_tokens + b.cache_write_tokens,
    )


def valid_text(text: str) -> str:
    """Model output with lone surrogates (from JSON escapes upstream) replaced by U+FFFD, so
    that it can be stored and sent on as UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text
