"""Retries and model fallback around one model call.

Until the first stream item arrives nothing has reached the user, so a failure can still be
hidden: retry the same model if the error is transient, else move on to the next model ref.
After the first item, any error is the caller's to handle: replaying would duplicate text.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace

from moltbot.providers.base import ModelRequest, Provider, ProviderError, StreamItem
from moltbot.providers.registry import ProviderRegistry

# An upstream stream that delivered its first item (None: it ended without any).
Opened = tuple[AsyncIterator[StreamItem], StreamItem | None]


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 2  # extra attempts per model, on top of the first
    base_delay: float = 0.25
    max_delay: float = 4.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number `attempt` (0-based): full-jitter exponential
        backoff, raised to the upstream's Retry-After, never above `max_delay`."""
        jitter = random.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))
        if retry_after is None:
            return jitter
        return max(jitter, min(retry_after, self.max_delay))


class FailoverStream:
    """Async-iterable over the stream items of the first model ref that answers.

    `model_ref` is the ref producing the items, set before the first one is yielded."""

    def __init__(
        self,
        registry: ProviderRegistry,
        refs: Sequence[str],
        request: ModelRequest,
        policy: RetryPolicy = RetryPolicy(),
    ) -> None:
        self.model_ref: str | None = None
        self._registry = registry
        self._refs = list(dict.fromkeys(refs))  # dedupe, keep order
        self._request = request
        self._policy = policy
        self._failures: list[tuple[str, ProviderError]] = []
        self._items = self._produce()

    def __aiter__(self) -> FailoverStream:
        return self

    async def __anext__(self) -> StreamItem:
        return await self._items.__anext__()

    async def aclose(self) -> None:
        """Stop now; the upstream response in use, if any, is closed before this returns.

        Call it from the consuming task between items (e.g. after leaving the loop); to stop a
        consumer that is waiting for the next item, cancel that task instead."""
        await self._items.aclose()

    async def _produce(self) -> AsyncIterator[StreamItem]:
        for ref in self._refs:
            opened = await self._open_ref(ref)
            if opened is None:
                continue
            upstream, first = opened
            self.model_ref = ref
            try:
                if first is not None:
                    yield first
                async for item in upstream:
                    yield item
            finally:
                await _close(upstream)
            return
        raise self._final_error()

    async def _open_ref(self, ref: str) -> Opened | None:
        """The ref's stream, opened; None after recording why this ref failed."""
        try:
            provider, model = self._registry.resolve(ref)
            return await self._open_with_retries(provider, replace(self._request, model=model))
        except ProviderError as error:
            self._failures.append((ref, error))
            return None

    async def _open_with_retries(self, provider: Provider, request: ModelRequest) -> Opened:
        attempt = 0
        while True:
            try:
                return await _open(provider.stream(request))
            except ProviderError as error:
                if not error.retryable or attempt >= self._policy.max_retries:
                    raise
                delay = self._policy.delay(attempt, error.retry_after)
            attempt += 1
            await asyncio.sleep(delay)

    def _final_error(self) -> ProviderError:
        if not self._failures:
            return ProviderError("config", "no model to try: the model list is empty")
        if len(self._failures) == 1:
            return self._failures[0][1]
        last = self._failures[-1][1]
        summary = " | ".join(f"{ref}: {error}" for ref, error in self._failures)
        return ProviderError(
            last.kind,
            f"All models failed ({len(self._failures)}): {summary}",
            status=last.status,
            retry_after=last.retry_after,
        )


async def _open(upstream: AsyncIterator[StreamItem]) -> Opened:
    """Wait for the first item; on any failure (cancellation too) close the attempt."""
    try:
        first = await anext(upstream, None)
    except BaseException:
        await _close(upstream)
        raise
    return upstream, first


async def _close(upstream: AsyncIterator[StreamItem]) -> None:
    aclose = getattr(upstream, "aclose", None)
    if aclose is not None:
        await aclose()
