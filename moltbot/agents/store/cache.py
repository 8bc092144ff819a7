"""Recent prompt histories in memory, kept in step with one store's own writes. Only valid
while this process is the store's only writer (SQLite: the gateway is one process)."""

from __future__ import annotations

from collections import OrderedDict

from moltbot.agents.store.records import TurnRecord, history_window
from moltbot.content import Message, without_image_bytes

HISTORY_CACHE_SESSIONS = 1024


class HistoryCache:
    """The prompt histories of recently active sessions, kept in step with the writes made
    through this store, so that a session's next turn needs no database read.

    A read that was in flight while its session was written is not cached (it may predate the
    write); the next read fetches again."""

    def __init__(self, capacity: int = HISTORY_CACHE_SESSIONS) -> None:
        self._capacity = capacity
        # key -> (max_messages it was read with, the messages)
        self._entries: OrderedDict[str, tuple[int, list[Message]]] = OrderedDict()
        self._fetching: dict[str, int] = {}
        self._stale: set[str] = set()

    def get(self, key: str, max_messages: int) -> list[Message] | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] != max_messages:
            return None
        self._entries.move_to_end(key)
        return list(entry[1])

    def begin_fetch(self, key: str) -> None:
        self._fetching[key] = self._fetching.get(key, 0) + 1

    def end_fetch(self, key: str, max_messages: int, messages: list[Message] | None) -> None:
        """`messages` is None when the read failed."""
        left = self._fetching.pop(key) - 1
        if left:
            self._fetching[key] = left
        stale = key in self._stale
        if not left:
            self._stale.discard(key)
        if messages is not None and not stale:
            self._put(key, max_messages, list(messages))

    def turn_recorded(self, turn: TurnRecord) -> None:
        self._written(turn.key)
        entry = self._entries.get(turn.key)
        if entry is None or turn.status != "ok":
            return
        limit, messages = entry
        # The same window and messages as a read from the database would give: image bytes
        # are not kept (up to 20 MB a turn, in up to HISTORY_CACHE_SESSIONS sessions).
        added = [without_image_bytes(m) for m in turn.messages]
        self._entries[turn.key] = (limit, history_window([*messages, *added], limit))

    def forget(self, key: str) -> None:
        """The session was reset or deleted."""
        self._written(key)
        self._entries.pop(key, None)

    def _written(self, key: str) -> None:
        if key in self._fetching:
            self._stale.add(key)

    def _put(self, key: str, max_messages: int, messages: list[Message]) -> None:
        self._entries[key] = (max_messages, messages)
        self._entries.move_to_end(key)
        if len(self._entries) > self._capacity:
            self._entries.popitem(last=False)
