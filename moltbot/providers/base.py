"""What every model provider speaks: a request in, an async stream of deltas out.

Providers know nothing of the gateway's HTTP or WS clients; the runtime turns their stream into
agent events. Each provider owns one `aiohttp.ClientSession` for all its upstream calls.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol

from moltbot.content import NO_TOOLS, Message, ToolSet

FinishReason = Literal["stop", "length", "tool_calls"]
ErrorKind = Literal[
    "auth", "rate_limit", "timeout", "upstream", "malformed", "connection", "config"
]


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """OpenAI-style sampling fields; None means "not set, provider default"."""

    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None


@dataclass(frozen=True, slots=True)
class ModelRequest:
    model: str  # the provider's own model id (the part after "provider/")
    system: str
    messages: tuple[Message, ...]  # well-formed (content.well_formed), the last is the input
    sampling: SamplingParams = SamplingParams()
    tools: ToolSet = NO_TOOLS


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """Part of the `index`-th tool call of the answer: its id and name come first (once),
    then fragments of its JSON arguments, in order."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def prompt_tokens(self) -> int:
        return self.input_tokens + self.cache_read_tokens + self.cache_write_tokens


@dataclass(frozen=True, slots=True)
class Finish:
    reason: FinishReason


StreamItem = TextDelta | ToolCallDelta | Usage | Finish


class ProviderError(Exception):
    """An upstream failure, classified. The message never contains an API key."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        """Worth another attempt on the same model (only before the first token)."""
        return self.kind in ("rate_limit", "connection", "timeout") or (
            self.kind == "upstream" and (self.status is None or self.status >= 500)
        )


class Provider(Protocol):
    name: str

    def stream(self, request: ModelRequest) -> AsyncIterator[StreamItem]:
        """Yield text and tool-call deltas as they arrive, then at most one `Usage` and one
        `Finish`.

        Raises `ProviderError` on any failure. Closing the iterator early (aclose) must close
        the upstream HTTP response at once."""
        ...

    async def close(self) -> None: ...
