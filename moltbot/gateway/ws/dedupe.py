"""The idempotency cache: what a request with a given idempotency key was answered.

Entries live five minutes and at most a thousand are kept (the oldest go first), as in the
reference; the runtime's own memory of finished runs (ten minutes) backs it up.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from moltbot.gateway.ws.protocol import RpcError

DEDUPE_TTL_SECONDS = 300.0
DEDUPE_MAX_ENTRIES = 1000


@dataclass(frozen=True, slots=True)
class Answer:
    ts: float
    ok: bool
    payload: Any
    error: RpcError | None = None


class DedupeCache:
    def __init__(
        self,
        ttl: float = DEDUPE_TTL_SECONDS,
        max_entries: int = DEDUPE_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, Answer] = OrderedDict()

    def get(self, key: str) -> Answer | None:
        self._sweep()
        return self._entries.get(key)

    def put(self, key: str, ok: bool, payload: Any, error: RpcError | None = None) -> None:
        self._entries.pop(key, None)  # re-inserted last: the order stays the order of `ts`
        self._entries[key] = Answer(self._clock(), ok, payload, error)
        self._sweep()

    def __len__(self) -> int:
        return len(self._entries)

    def _sweep(self) -> None:
        limit = self._clock() - self._ttl
        while self._entries:
            oldest = next(iter(self._entries.values()))
            if oldest.ts >= limit and len(self._entries) <= self._max:
                break
            self._entries.popitem(last=False)
