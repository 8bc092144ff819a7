"""What the runtime and the WebSocket methods need from a session store, whatever keeps it.

Two backends implement it: `SqliteStore` (one file, one process; the default) and
`PostgresStore` (one database shared by every worker and replica). Everything above the store
is typed against these protocols, never against a backend.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from moltbot.agents.store.records import (
    ResponseRecord,
    RunRecord,
    SessionInfo,
    StoredResponse,
    TranscriptMessage,
    TurnRecord,
)
from moltbot.content import Message


class RunRegistry(Protocol):
    """Run ids claimed across processes, so an idempotency key starts one run in all of them.
    Only a store shared by several processes has one (within one process the runtime's own
    memory of its runs is the registry)."""

    async def claim(self, run_id: str, session_key: str, accepted_at: int) -> RunRecord | None:
        """Claim `run_id` for a run this process starts: None if it was new, else the earlier
        claim's record (made here or elsewhere)."""
        ...

    async def get(self, run_id: str) -> RunRecord | None: ...

    async def end(self, run_id: str, ended_at: int, outcome: dict[str, Any]) -> None:
        """Keep the run's final answer, for a repeat of its idempotency key anywhere."""
        ...


class RunChannel(Protocol):
    """Notices about runs between the processes sharing the store (LISTEN/NOTIFY on
    PostgreSQL): small JSON objects whose `t` says what they are and `o` who sent them, for
    what is rare (aborts, following a run); and the recorded end of a run, by its id."""

    origin: str  # this process, as its notices name it

    def subscribe(self, listener: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        """Call `listener` with every notice (this process's own too); returns the undo."""
        ...

    async def publish(self, notice: dict[str, Any]) -> None: ...

    async def turn_end(self, run_id: str) -> dict[str, Any] | None:
        """The recorded end of `run_id` ({"t": "turn", "run", "status", "startedAt",
        "endedAt", "error"}); None if no turn of that id is recorded."""
        ...


class SessionStore(Protocol):
    """Sessions (one row per key) and their transcripts. Every method raises
    SessionStoreError (naming the operation) when the backend fails."""

    # Set when other processes share the store (None: this process is its only user).
    runs: RunRegistry | None
    channel: RunChannel | None

    async def get(self, key: str) -> SessionInfo | None: ...

    async def prompt_history(self, key: str, max_messages: int = 100) -> list[Message]:
        """The model's context: the current transcript's "ok" turns, oldest first, at most the
        last `max_messages` messages, starting at a user message (a window never starts in the
        middle of a turn)."""
        ...

    async def record_turn(self, turn: TurnRecord) -> SessionInfo:
        """Write a finished run, all or nothing: the session row (created on its first turn,
        agent_id kept from then on) and its messages, in order. Returns once it is durable.

        updated_at = ended_at (never moving back); model = turn.model unless None; token totals
        grow by `turn_totals`; turns grows for "ok" runs only; aborted_last_run = "aborted"."""
        ...

    async def messages(self, key: str, limit: int = 200) -> list[TranscriptMessage]:
        """The last `limit` messages of the current transcript (every status), oldest first."""
        ...

    async def preview(
        self, keys: Sequence[str], limit: int = 12
    ) -> dict[str, list[TranscriptMessage]]:
        """The last `limit` messages of each existing key; unknown keys are left out."""
        ...

    async def reset(self, key: str) -> SessionInfo | None:
        """Start a new transcript: new session_id, counters to zero, updated_at = now. The old
        messages are kept under the old session_id. None if `key` is unknown."""
        ...

    async def delete(self, key: str) -> bool:
        """Remove the session and every message it ever had; True if it existed."""
        ...

    async def ensure(self, key: str, agent_id: str) -> SessionInfo:
        """The session `key`, created empty (no turn) for `agent_id` if it does not exist."""
        ...

    async def key_of(self, session_id: str) -> str | None:
        """The key of the session whose current transcript is `session_id`, if any."""
        ...

    async def save_response(self, record: ResponseRecord) -> bool:
        """Remember a response of the Responses endpoint until `record.expires_at`, tied to
        its session as it is now (transcript and turn count). False, and nothing saved, when
        the session does not exist. Expired responses are deleted on the way."""
        ...

    async def get_response(self, response_id: str) -> StoredResponse | None:
        """A remembered response that has not expired and whose session still exists."""
        ...

    def turn_lock(self, key: str) -> AbstractAsyncContextManager[None]:
        """Held for the whole of one turn of `key` (history read to turn written), so the
        session's turns run one after another in every process that shares the store. A
        process that dies never leaves it held."""
        ...

    async def close(self) -> None:
        """Finish the calls already made, then release every resource."""
        ...

    # Last, so that `list` in the annotations above still means the builtin.
    async def list(
        self,
        *,
        agent_id: str | None = None,
        limit: int = 50,
        offset: int = 0,
        search: str | None = None,
        active_minutes: int | None = None,
    ) -> tuple[list[SessionInfo], int]:
        """A page of sessions, newest updated first, and how many match in all. `search`
        matches a substring of the key, ignoring ASCII case; `active_minutes` keeps sessions
        updated within that many minutes of now."""
        ...
