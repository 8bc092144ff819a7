"""Session store on SQLite: one row per session key, plus its transcript, in one file.

The default backend, for a gateway that is one process (`--workers` > 1 needs PostgreSQL).

Threading: SQLite calls block, so none runs on the event loop. The store owns one worker
thread (a single-thread executor) and one connection created on that thread; `sqlite3`'s
`check_same_thread` then refuses any use from elsewhere. Every public method is one call that
goes to that thread once and runs whole there. Calls made while the thread is busy wait in a
queue and then go over together as one batch: one thread hop and one COMMIT for all of them
(group commit). A hop costs about as much as a turn's SQL here, and a commit as much again, so
this is what lets the store keep up under load. One thread is also one writer: no locks of
our own, and each constant SQL string below is prepared once by sqlite3's statement cache.

Atomicity: each call runs inside a SAVEPOINT of its own, so a failing call undoes exactly its
own writes (a turn is never half-written) and the rest of its batch still commits.

Durability: WAL journal with `synchronous=NORMAL`. A caller is answered only after its batch's
COMMIT has been appended to the WAL, so a recorded turn survives kill -9 of the process; after
an OS crash or power loss the last commits may be lost, but the file stays consistent.

Order: `messages.id` is a rowid that only grows, so it is the order of a transcript; there is
no separate sequence column to keep in step.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import sqlite3
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from moltbot.agents.store.cache import HistoryCache
from moltbot.agents.store.protocol import RunChannel, RunRegistry
from moltbot.agents.store.records import (
    ResponseRecord,
    SessionInfo,
    SessionStoreError,
    StoredResponse,
    TranscriptMessage,
    TurnRecord,
    history_window,
    like_pattern,
    reply_index,
    session_values,
    stored_message,
    wall_clock_ms,
)
from moltbot.content import Message, message_to_json
from moltbot.permissions import make_database_private

SCHEMA_VERSION = 3  # stored in PRAGMA user_version; bump it with each migration

T = TypeVar("T")
NO_LOCK: AbstractAsyncContextManager[None] = contextlib.nullcontext()


# --- Schema ------------------------------------------------------------------------------------

# `sessions` is WITHOUT ROWID: it is looked up by its text key, and each secondary index then
# carries the key too, so "newest first, key as tie-break" is served by the index alone.
# messages(session_key, session_id, id) serves every transcript read (newest first) and the
# cascade of a delete; the two sessions indexes serve list() with and without an agent filter.
SCHEMA_V1 = """
CREATE TABLE sessions (
    key TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    model TEXT,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    total_tokens INTEGER NOT NULL DEFAULT 0,
    turns INTEGER NOT NULL DEFAULT 0,
    aborted_last_run INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX sessions_by_agent ON sessions (agent_id, updated_at);
CREATE INDEX sessions_by_time ON sessions (updated_at);
CREATE TABLE messages (
    id INTEGER PRIMARY KEY,
    session_key TEXT NOT NULL REFERENCES sessions (key) ON DELETE CASCADE,
    session_id TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    content TEXT NOT NULL,
    run_id TEXT NOT NULL,
    ts INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'error', 'aborted')),
    model TEXT,
    input_tokens INTEGER,
    output_tokens INTEGER,
    error TEXT
);
CREATE INDEX messages_by_session ON messages (session_key, session_id, id);
"""

# v2: structured messages. Tool messages join the roles, and `parts` holds the message as JSON
# (content.message_to_json) unless it is plain text, which stays in `content` alone. `content`
# is always the message's text, for previews and search. SQLite cannot change a CHECK in place,
# so the table is rebuilt; its rowids (the transcript order) are copied as they are.
MIGRATE_V1_TO_V2 = """
CREATE TABLE messages_v2 (
    id INTEGER PRIMARY KEY,
    session_key TEXT NOT NULL REFERENCES sessions (key) ON DELETE CASCADE,
    session_id TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'tool')),
    content TEXT NOT NULL,
    parts TEXT,
    run_id TEXT NOT NULL,
    ts INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'error', 'aborted')),
    model TEXT,
    input_tokens INTEGER,
    output_tokens INTEGER,
    error TEXT
);
INSERT INTO messages_v2 (id, session_key, session_id, role, content, run_id, ts, status,
                         model, input_tokens, output_tokens, error)
    SELECT id, session_key, session_id, role, content, run_id, ts, status,
           model, input_tokens, output_tokens, error FROM messages;
DROP TABLE messages;
ALTER TABLE messages_v2 RENAME TO messages;
CREATE INDEX messages_by_session ON messages (session_key, session_id, id);
"""

# v3: what the Responses endpoint remembers of each response, so that `previous_response_id`
# can continue it: its session, the transcript (session_id) and the count of "ok" turns that
# transcript had right after it (a continuation checks the session has not moved on since),
# and the response object as sent (JSON; NULL when too large to keep). Rows go with their
# session (ON DELETE CASCADE, served by responses_by_session) and when expired.
MIGRATE_V2_TO_V3 = """
CREATE TABLE responses (
    id TEXT PRIMARY KEY,
    session_key TEXT NOT NULL REFERENCES sessions (key) ON DELETE CASCADE,
    session_id TEXT NOT NULL,
    turns INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    body TEXT
);
CREATE INDEX responses_by_session ON responses (session_key);
CREATE INDEX responses_by_expiry ON responses (expires_at);
"""
MIGRATIONS = {0: SCHEMA_V1, 1: MIGRATE_V1_TO_V2, 2: MIGRATE_V2_TO_V3}  # from version n to n + 1

# --- Statements (constant strings, so sqlite3's statement cache prepares each once) ----------

SESSION_COLUMNS = (
    "key, agent_id, session_id, created_at, updated_at, model,"
    " input_tokens, output_tokens, total_tokens, turns, aborted_last_run"
)
MESSAGE_COLUMNS = (
    "role, content, parts, run_id, ts, status, model, input_tokens, output_tokens, error"
)

GET_SESSION = f"SELECT {SESSION_COLUMNS} FROM sessions WHERE key = ?"

# updated_at never goes back: turns of one key may finish out of order.
UPSERT_TURN = f"""
INSERT INTO sessions ({SESSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (key) DO UPDATE SET
    updated_at = max(updated_at, excluded.updated_at),
    model = coalesce(excluded.model, model),
    input_tokens = input_tokens + excluded.input_tokens,
    output_tokens = output_tokens + excluded.output_tokens,
    total_tokens = total_tokens + excluded.total_tokens,
    turns = turns + excluded.turns,
    aborted_last_run = excluded.aborted_last_run
RETURNING {SESSION_COLUMNS}
"""

INSERT_MESSAGE = f"""
INSERT INTO messages (session_key, session_id, {MESSAGE_COLUMNS})
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""

# The current transcript, newest first; callers reverse it.
LAST_MESSAGES = f"""
SELECT {MESSAGE_COLUMNS} FROM messages
WHERE session_key = ?1 AND session_id = (SELECT session_id FROM sessions WHERE key = ?1)
ORDER BY id DESC LIMIT ?2
"""

LAST_OK_MESSAGES = """
SELECT role, content, parts FROM messages
WHERE session_key = ?1 AND session_id = (SELECT session_id FROM sessions WHERE key = ?1)
  AND status = 'ok'
ORDER BY id DESC LIMIT ?2
"""

RESET_SESSION = f"""
UPDATE sessions SET session_id = ?, updated_at = ?, input_tokens = 0, output_tokens = 0,
    total_tokens = 0, turns = 0, aborted_last_run = 0
WHERE key = ?
RETURNING {SESSION_COLUMNS}
"""

DELETE_SESSION = "DELETE FROM sessions WHERE key = ?"  # messages go by ON DELETE CASCADE

# No index: an admin's look-up, for keys too long to send back (written before keys had a cap).
KEY_OF_SESSION_ID = "SELECT key FROM sessions WHERE session_id = ?"

INSERT_EMPTY_SESSION = f"""
INSERT INTO sessions ({SESSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, NULL, 0, 0, 0, 0, 0)
ON CONFLICT (key) DO NOTHING
"""

# The session's transcript and turn count are taken as they are when the response is saved
# (right after its turn was recorded); no row when the session does not exist.
SAVE_RESPONSE = """
INSERT INTO responses (id, session_key, session_id, turns, created_at, expires_at, body)
SELECT ?1, key, session_id, turns, ?2, ?3, ?4 FROM sessions WHERE key = ?5
"""

PURGE_RESPONSES = "DELETE FROM responses WHERE expires_at <= ?"

GET_RESPONSE = """
SELECT r.session_key, r.created_at, r.expires_at, r.body,
       s.session_id <> r.session_id, s.turns - r.turns
FROM responses r JOIN sessions s ON s.key = r.session_key
WHERE r.id = ? AND r.expires_at > ?
"""

# list() builds its WHERE from the filters given (see list_filter); each of the eight variants
# is a constant string, so the statement cache still prepares it once. One string with
# "(? IS NULL OR agent_id = ?)" would keep the planner from using the agent index.
LIST_PAGE = (
    "SELECT {columns} FROM sessions{where} ORDER BY updated_at DESC, key DESC LIMIT ? OFFSET ?"
)
LIST_COUNT = "SELECT count(*) FROM sessions{where}"


# --- Row conversion --------------------------------------------------------------------------


def session_from_row(row: tuple[Any, ...]) -> SessionInfo:
    return SessionInfo(*row[:10], aborted_last_run=bool(row[10]))


def message_from_row(row: tuple[Any, ...]) -> TranscriptMessage:
    return TranscriptMessage(stored_message(*row[:3]), *row[3:])


def message_columns(message: Message) -> tuple[str, str, str | None]:
    """(role, content, parts) of a message to store."""
    if message.is_plain_text:
        return message.role, message.text, None
    parts = json.dumps(message_to_json(message), ensure_ascii=False, separators=(",", ":"))
    return message.role, message.text, parts


def list_filter(
    agent_id: str | None, search: str | None, since: int | None
) -> tuple[str, list[Any]]:
    """The WHERE clause of list() and its parameters. LIKE ignores ASCII case only."""
    clauses: list[str] = []
    params: list[Any] = []
    if agent_id is not None:
        clauses.append("agent_id = ?")
        params.append(agent_id)
    if search:
        clauses.append("key LIKE ? ESCAPE '\\'")
        params.append(like_pattern(search))
    if since is not None:
        clauses.append("updated_at >= ?")
        params.append(since)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def message_values(turn: TurnRecord, session_id: str) -> list[tuple[Any, ...]]:
    """One row per message. The reply (the last assistant message) carries the model, tokens
    and error, and the end time, like whatever follows it (results of its tool calls)."""
    usage = turn.usage
    reply = reply_index(turn.messages)
    rows = []
    for index, message in enumerate(turn.messages):
        if index != reply:
            ts = turn.started_at if index < reply else turn.ended_at
            rows.append((turn.key, session_id, *message_columns(message), turn.run_id, ts,
                         turn.status, None, None, None, None))  # fmt: skip
            continue
        rows.append((
            turn.key, session_id, *message_columns(message), turn.run_id, turn.ended_at,
            turn.status,
            turn.model,
            usage.input_tokens if usage else None,
            usage.output_tokens if usage else None,
            turn.error,
        ))  # fmt: skip
    return rows


# --- Opening the file ------------------------------------------------------------------------


def make_private_dirs(directory: Path) -> None:
    """Create `directory` and any missing parents with mode 0700 (pathlib would use 0777)."""
    missing = [d for d in (directory, *directory.parents) if not d.exists()]
    for d in reversed(missing):
        d.mkdir(mode=0o700, exist_ok=True)


def configure(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA busy_timeout = 5000")  # only other processes can hold the lock


def migrate(conn: sqlite3.Connection) -> None:
    """Bring the schema to SCHEMA_VERSION; refuse a file written by a newer version."""
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version > SCHEMA_VERSION:
        raise SessionStoreError(
            f"session store schema version {version} is newer than this build's {SCHEMA_VERSION}"
        )
    if version == SCHEMA_VERSION:
        return
    # executescript would COMMIT first; run the statements one by one inside one transaction,
    # so a migration that fails half-way leaves the file as it was.
    with transaction(conn):
        for step in range(version, SCHEMA_VERSION):
            for statement in MIGRATIONS[step].split(";"):
                if statement.strip():
                    conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """Commit what the block wrote, or none of it."""
    # IMMEDIATE takes the write lock up front, so another process holding the file (a CLI,
    # a backup) makes us wait on busy_timeout instead of failing half-way.
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # SQLite may already have rolled back (e.g. disk full)
            conn.execute("ROLLBACK")
        raise


# --- The database thread ---------------------------------------------------------------------

Outcome = tuple[Any, Exception | None]  # a call's result, or the error to raise in its caller


def run_isolated(
    conn: sqlite3.Connection, fn: Callable[..., Any], args: tuple[Any, ...]
) -> Outcome:
    """Run one call of a batch in its own savepoint: on failure only its writes are undone."""
    conn.execute("SAVEPOINT call")
    try:
        result = fn(*args)
    except Exception as exc:
        if not conn.in_transaction:  # SQLite rolled back the whole batch (disk full, I/O error)
            raise
        conn.execute("ROLLBACK TO call")
        conn.execute("RELEASE call")
        return None, store_error(fn, exc)
    conn.execute("RELEASE call")
    return result, None


def store_error(fn: Callable[..., Any], exc: Exception) -> Exception:
    """SQLite and OS errors become SessionStoreError naming the call; anything else is a bug
    and passes through unchanged."""
    if isinstance(exc, (sqlite3.Error, OSError)):
        name = getattr(fn, "__name__", "call")
        return SessionStoreError(f"session store {name} failed: {exc}")
    return exc


class Database:
    """The connection and every operation on it. Each method runs on the store's one thread."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    @classmethod
    def open(cls, path: Path, trace: Callable[[str], None] | None) -> Database:
        make_private_dirs(path.parent)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)  # SQLite gives -wal/-shm this mode
        os.close(fd)
        make_database_private(path)  # a file left readable by others (an older version's)
        conn = sqlite3.connect(path, isolation_level=None)  # we BEGIN/COMMIT ourselves
        try:
            if trace is not None:
                conn.set_trace_callback(trace)
            configure(conn)
            migrate(conn)
        except BaseException:
            conn.close()
            raise
        return cls(conn)

    def close(self) -> None:
        try:
            self.conn.close()
        except sqlite3.Error as exc:
            raise SessionStoreError(f"session store close failed: {exc}") from None

    def run_batch(
        self, calls: Sequence[tuple[Callable[..., Any], tuple[Any, ...]]]
    ) -> list[Outcome]:
        """Run queued calls in order, in one transaction. If the transaction itself fails
        (BEGIN, COMMIT, or SQLite giving up on it), nothing was written and every call fails."""
        try:
            with transaction(self.conn):
                return [run_isolated(self.conn, fn, args) for fn, args in calls]
        except (sqlite3.Error, OSError) as exc:
            error = SessionStoreError(f"session store transaction failed: {exc}")
            return [(None, error)] * len(calls)

    def get(self, key: str) -> SessionInfo | None:
        row = self.conn.execute(GET_SESSION, (key,)).fetchone()
        return session_from_row(row) if row else None

    def record_turn(self, turn: TurnRecord) -> SessionInfo:
        row = self.conn.execute(UPSERT_TURN, session_values(turn)).fetchone()
        session = session_from_row(row)
        self.conn.executemany(INSERT_MESSAGE, message_values(turn, session.session_id))
        return session

    def prompt_history(self, key: str, max_messages: int) -> list[Message]:
        rows = self.conn.execute(LAST_OK_MESSAGES, (key, max(0, max_messages))).fetchall()
        return history_window([stored_message(*row) for row in reversed(rows)], max_messages)

    def messages(self, key: str, limit: int) -> list[TranscriptMessage]:
        rows = self.conn.execute(LAST_MESSAGES, (key, max(0, limit))).fetchall()
        return [message_from_row(row) for row in reversed(rows)]

    def preview(self, keys: Sequence[str], limit: int) -> dict[str, list[TranscriptMessage]]:
        found = {}
        for key in dict.fromkeys(keys):  # dedupe, keep order
            if self.conn.execute(GET_SESSION, (key,)).fetchone():
                found[key] = self.messages(key, limit)
        return found

    def reset(self, key: str, now: int) -> SessionInfo | None:
        row = self.conn.execute(RESET_SESSION, (str(uuid.uuid4()), now, key)).fetchone()
        return session_from_row(row) if row else None

    def delete(self, key: str) -> bool:
        return self.conn.execute(DELETE_SESSION, (key,)).rowcount > 0

    def key_of(self, session_id: str) -> str | None:
        row = self.conn.execute(KEY_OF_SESSION_ID, (session_id,)).fetchone()
        return row[0] if row else None

    def ensure(self, key: str, agent_id: str, now: int) -> SessionInfo:
        self.conn.execute(INSERT_EMPTY_SESSION, (key, agent_id, str(uuid.uuid4()), now, now))
        return session_from_row(self.conn.execute(GET_SESSION, (key,)).fetchone())

    def save_response(self, record: ResponseRecord, now: int) -> bool:
        self.conn.execute(PURGE_RESPONSES, (now,))
        values = (record.id, record.created_at, record.expires_at, record.body, record.session_key)
        return self.conn.execute(SAVE_RESPONSE, values).rowcount > 0

    def get_response(self, response_id: str, now: int) -> StoredResponse | None:
        row = self.conn.execute(GET_RESPONSE, (response_id, now)).fetchone()
        if row is None:
            return None
        key, created_at, expires_at, body, reset_since, turns_since = row
        return StoredResponse(
            response_id, key, created_at, expires_at, body, bool(reset_since), turns_since
        )

    # Last, so that `list` in the annotations above still means the builtin.
    def list(
        self, agent_id: str | None, search: str | None, since: int | None, limit: int, offset: int
    ) -> tuple[list[SessionInfo], int]:
        where, params = list_filter(agent_id, search, since)
        page = LIST_PAGE.format(columns=SESSION_COLUMNS, where=where)
        rows = self.conn.execute(page, [*params, max(0, limit), max(0, offset)]).fetchall()
        (total,) = self.conn.execute(LIST_COUNT.format(where=where), params).fetchone()
        return [session_from_row(row) for row in rows], total


def open_database(path: Path, trace: Callable[[str], None] | None) -> Database:
    """Database.open with its errors as SessionStoreError (runs on the database thread)."""
    try:
        return Database.open(path, trace)
    except (sqlite3.Error, OSError) as exc:
        raise SessionStoreError(f"session store open failed: {exc}") from None


def batch_outcomes(done: asyncio.Future[list[Outcome]], size: int) -> list[Outcome]:
    """What run_batch returned, or its own failure given to every call of the batch."""
    try:
        return done.result()
    except BaseException as exc:  # run_batch does not raise; this keeps callers from hanging
        return [(None, SessionStoreError(f"session store batch failed: {exc!r}"))] * size


# --- The async face ----------------------------------------------------------------------------


@dataclass(slots=True)
class Call:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    future: asyncio.Future[Any]


class SqliteStore:
    """Sessions and transcripts for the gateway. Open with `await SqliteStore.open(path)`."""

    def __init__(
        self, db: Database, executor: ThreadPoolExecutor, now_ms: Callable[[], int]
    ) -> None:
        self._db = db
        self._executor = executor
        self._now_ms = now_ms
        self._queue: list[Call] = []
        self._idle = asyncio.Event()  # no batch is on the database thread
        self._idle.set()
        self._closing: asyncio.Task[None] | None = None
        self._history = HistoryCache()
        # One process is this store's only user: the runtime's own memory of runs suffices.
        self.runs: RunRegistry | None = None
        self.channel: RunChannel | None = None

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        now_ms: Callable[[], int] = wall_clock_ms,
        trace: Callable[[str], None] | None = None,
    ) -> SqliteStore:
        """Open (or create) the store at `path`.

        `now_ms` is the clock for reset/ensure/list and response expiry; `trace`, if given, is
        called with every SQL statement, on the database thread (for debugging and tests)."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="session-store")
        loop = asyncio.get_running_loop()
        try:
            db = await loop.run_in_executor(executor, open_database, path, trace)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(db, executor, now_ms)

    async def close(self) -> None:
        """Finish the calls already made, close the connection and let the thread end."""
        if self._closing is None:
            self._closing = asyncio.create_task(self._shut_down())
        await asyncio.shield(self._closing)

    async def _shut_down(self) -> None:
        await self._idle.wait()
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._db.close)
        finally:
            self._executor.shutdown(wait=False)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Queue one call for the database thread and wait for its outcome.

        Cancelling the wait does not cancel the call: it may already be running."""
        if self._closing is not None:
            raise SessionStoreError("session store is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.append(Call(fn, args, future))
        if self._idle.is_set():
            self._idle.clear()
            # call_soon, not now: calls made in this same loop iteration join the batch.
            loop.call_soon(self._send_batch)
        return await future

    def _send_batch(self) -> None:
        batch, self._queue = self._queue, []
        calls = [(call.fn, call.args) for call in batch]
        loop = asyncio.get_running_loop()
        done = loop.run_in_executor(self._executor, self._db.run_batch, calls)
        done.add_done_callback(functools.partial(self._deliver, batch))

    def _deliver(self, batch: list[Call], done: asyncio.Future[list[Outcome]]) -> None:
        for call, (result, error) in zip(batch, batch_outcomes(done, len(batch)), strict=True):
            if call.future.done():  # its caller stopped waiting
                continue
            if error is None:
                call.future.set_result(result)
            else:
                call.future.set_exception(error)
        if self._queue:  # calls made while this batch ran
            self._send_batch()
        else:
            self._idle.set()

    async def get(self, key: str) -> SessionInfo | None:
        return await self._call(self._db.get, key)

    async def prompt_history(self, key: str, max_messages: int = 100) -> list[Message]:
        """The model's context: the current transcript's "ok" turns, oldest first, at most the
        last `max_messages` messages, starting at a user message (`history_window`)."""
        cached = self._history.get(key, max_messages)
        if cached is not None:
            return cached
        self._history.begin_fetch(key)
        messages = None
        try:
            messages = await self._call(self._db.prompt_history, key, max_messages)
            return messages
        finally:
            self._history.end_fetch(key, max_messages, messages)

    async def record_turn(self, turn: TurnRecord) -> SessionInfo:
        """Write a finished run, all or nothing: the session row (created on the first turn,
        agent_id kept from then on) and its messages, in order. Returns after COMMIT.

        updated_at = ended_at (never moving back); model = turn.model unless None; token totals
        grow by `turn_totals`; turns grows for "ok" runs only; aborted_last_run = "aborted"."""
        try:
            info = await self._call(self._db.record_turn, turn)
        except BaseException:
            self._history.forget(turn.key)  # outcome unknown: read it again next time
            raise
        self._history.turn_recorded(turn)
        return info

    async def messages(self, key: str, limit: int = 200) -> list[TranscriptMessage]:
        """The last `limit` messages of the current transcript (every status), oldest first."""
        return await self._call(self._db.messages, key, limit)

    async def preview(
        self, keys: Sequence[str], limit: int = 12
    ) -> dict[str, list[TranscriptMessage]]:
        """The last `limit` messages of each existing key; unknown keys are left out."""
        # A copy: the caller may change its sequence while the database thread reads it.
        return await self._call(self._db.preview, tuple(keys), limit)

    async def reset(self, key: str) -> SessionInfo | None:
        """Start a new transcript: new session_id, counters to zero, updated_at = now.

        The old messages stay in the file under the old session_id. None if `key` is unknown."""
        try:
            return await self._call(self._db.reset, key, self._now_ms())
        finally:
            self._history.forget(key)

    async def delete(self, key: str) -> bool:
        """Remove the session and every message it ever had; True if it existed."""
        try:
            return await self._call(self._db.delete, key)
        finally:
            self._history.forget(key)

    async def key_of(self, session_id: str) -> str | None:
        """The key of the session whose current transcript is `session_id`, if any."""
        return await self._call(self._db.key_of, session_id)

    async def ensure(self, key: str, agent_id: str) -> SessionInfo:
        """The session `key`, created empty (no turn) for `agent_id` if it does not exist."""
        return await self._call(self._db.ensure, key, agent_id, self._now_ms())

    async def save_response(self, record: ResponseRecord) -> bool:
        """Remember a response of the Responses endpoint until `record.expires_at`, tied to
        its session as it is now (transcript and turn count). False, and nothing saved, when
        the session does not exist. Expired responses are deleted on the way."""
        return await self._call(self._db.save_response, record, self._now_ms())

    async def get_response(self, response_id: str) -> StoredResponse | None:
        """A remembered response that has not expired and whose session still exists."""
        return await self._call(self._db.get_response, response_id, self._now_ms())

    def turn_lock(self, key: str) -> AbstractAsyncContextManager[None]:
        """Nothing to take: the gateway is one process, whose lanes already run a session's
        turns one at a time."""
        return NO_LOCK

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
        """A page of sessions, newest updated first, and how many match in all.

        `search` matches a substring of the key, ignoring ASCII case; `active_minutes` keeps
        sessions updated within that many minutes of now."""
        since = None if active_minutes is None else self._now_ms() - active_minutes * 60_000
        return await self._call(self._db.list, agent_id, search, since, limit, offset)
