"""Session store on PostgreSQL (asyncpg): what several gateway processes share.

Every worker and every replica opens its own bounded pool on the one database. Nothing here
blocks the event loop: asyncpg speaks the protocol on the loop itself. Each method is one
statement (or two reads), so each is atomic on its own; `record_turn` writes the session row
and the turn's messages in one statement.

Turn order across processes: `turn_lock(key)` holds a session-level advisory lock on the
session key, on a connection kept for the whole turn, so a session's turns run one after
another whichever process runs them. The turn's history read and its write go over that same
connection. A process that dies loses its connections, and PostgreSQL drops their locks with
them: a crashed worker never leaves a session locked.

Order: `messages.id` comes from an identity sequence; a session's turns never overlap (the
lock), so within a session the ids follow the turns.

Schema: tables are prefixed `moltbot_`, so the store can share a database with other things.
Migrations run at open, under a transaction-level advisory lock, so workers starting at once
apply each step exactly once. PostgreSQL text cannot hold NUL characters: a message containing
one is kept exactly in `parts` (JSON escapes it) and its plain `content` has U+FFFD instead;
keys and other fields have NUL replaced by U+FFFD.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import asyncpg

from moltbot.agents.store.pg_channel import PostgresChannel
from moltbot.agents.store.pg_pool import ConnectionPool, PoolClosed
from moltbot.agents.store.records import (
    ResponseRecord,
    RunRecord,
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
from moltbot.config.model import PostgresConfig, dsn_without_password
from moltbot.content import Message, message_to_json, without_image_bytes
from moltbot.logs import get_logger

log = get_logger("moltbot.store")

T = TypeVar("T")

SCHEMA_VERSION = 2
# Advisory lock keys: one for migrations, and a namespace for session keys (hashed into it).
MIGRATION_LOCK = 0x6D6F6C74_00000001
SESSION_LOCK_SALT = b"moltbot-session\0"
# Bounds on every wait: a connection from the pool, a connect, one statement.
ACQUIRE_TIMEOUT_SECONDS = 30.0
CONNECT_TIMEOUT_SECONDS = 10.0
COMMAND_TIMEOUT_SECONDS = 30.0
# The longest a turn may wait for its session's earlier turn: longer than any run may last.
LOCK_WAIT_SECONDS = 24 * 3600.0

SCHEMA_V1 = """
CREATE TABLE moltbot_sessions (
    key text PRIMARY KEY,
    agent_id text NOT NULL,
    session_id text NOT NULL,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL,
    model text,
    input_tokens bigint NOT NULL DEFAULT 0,
    output_tokens bigint NOT NULL DEFAULT 0,
    total_tokens bigint NOT NULL DEFAULT 0,
    turns bigint NOT NULL DEFAULT 0,
    aborted_last_run boolean NOT NULL DEFAULT false
);
CREATE INDEX moltbot_sessions_by_agent ON moltbot_sessions (agent_id, updated_at, key);
CREATE INDEX moltbot_sessions_by_time ON moltbot_sessions (updated_at, key);
CREATE TABLE moltbot_messages (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_key text NOT NULL REFERENCES moltbot_sessions (key) ON DELETE CASCADE,
    session_id text NOT NULL,
    role text NOT NULL CHECK (role IN ('user', 'assistant', 'tool')),
    content text NOT NULL,
    parts text,
    run_id text NOT NULL,
    ts bigint NOT NULL,
    status text NOT NULL CHECK (status IN ('ok', 'error', 'aborted')),
    model text,
    input_tokens bigint,
    output_tokens bigint,
    error text
);
CREATE INDEX moltbot_messages_by_session ON moltbot_messages (session_key, session_id, id);
CREATE INDEX moltbot_messages_by_run ON moltbot_messages (run_id);
CREATE TABLE moltbot_runs (
    run_id text PRIMARY KEY,
    session_key text NOT NULL,
    accepted_at bigint NOT NULL,
    ended_at bigint,
    outcome text
);
CREATE INDEX moltbot_runs_by_time ON moltbot_runs (accepted_at);
CREATE TABLE moltbot_responses (
    id text PRIMARY KEY,
    session_key text NOT NULL REFERENCES moltbot_sessions (key) ON DELETE CASCADE,
    session_id text NOT NULL,
    turns bigint NOT NULL,
    created_at bigint NOT NULL,
    expires_at bigint NOT NULL,
    body text
);
CREATE INDEX moltbot_responses_by_session ON moltbot_responses (session_key);
CREATE INDEX moltbot_responses_by_expiry ON moltbot_responses (expires_at);
-- A turn's start in one round trip (replaced in v2).
CREATE FUNCTION moltbot_begin_turn(lock_key bigint, turn_key text, max_messages integer,
                                   known_session text, known_last bigint)
RETURNS TABLE (h_session text, h_last bigint, m_role text, m_content text, m_parts text)
LANGUAGE plpgsql VOLATILE AS $fn$
BEGIN
    PERFORM pg_advisory_lock(lock_key);
    RETURN QUERY
    WITH head AS (
        SELECT s.session_id,
               (SELECT max(m.id) FROM moltbot_messages m
                WHERE m.session_key = s.key AND m.session_id = s.session_id) AS last
        FROM moltbot_sessions s WHERE s.key = turn_key
    )
    SELECT head.session_id, head.last, h.role, h.content, h.parts
    FROM head LEFT JOIN LATERAL (
        SELECT m.id, m.role, m.content, m.parts FROM moltbot_messages m
        WHERE m.session_key = turn_key AND m.session_id = head.session_id AND m.status = 'ok'
          AND (head.session_id IS DISTINCT FROM known_session
               OR head.last IS DISTINCT FROM known_last)
        ORDER BY m.id DESC LIMIT max_messages
    ) h ON true
    ORDER BY h.id DESC;
END
$fn$;
"""
# v2: the head is read once per call (a CTE referenced per history row is re-evaluated per
# row unless materialized: ~1.5 ms for 100 rows in v1).
SCHEMA_V2 = """
CREATE OR REPLACE FUNCTION moltbot_begin_turn(lock_key bigint, turn_key text,
                                              max_messages integer, known_session text,
                                              known_last bigint)
RETURNS TABLE (h_session text, h_last bigint, m_role text, m_content text, m_parts text)
LANGUAGE plpgsql VOLATILE AS $fn$
BEGIN
    PERFORM pg_advisory_lock(lock_key);
    RETURN QUERY
    WITH head AS MATERIALIZED (
        SELECT s.session_id,
               (SELECT max(m.id) FROM moltbot_messages m
                WHERE m.session_key = s.key AND m.session_id = s.session_id) AS last
        FROM moltbot_sessions s WHERE s.key = turn_key
    )
    SELECT head.session_id, head.last, h.role, h.content, h.parts
    FROM head LEFT JOIN LATERAL (
        SELECT m.id, m.role, m.content, m.parts FROM moltbot_messages m
        WHERE m.session_key = turn_key AND m.session_id = head.session_id AND m.status = 'ok'
          AND (head.session_id IS DISTINCT FROM known_session
               OR head.last IS DISTINCT FROM known_last)
        ORDER BY m.id DESC LIMIT max_messages
    ) h ON true
    ORDER BY h.id DESC;
END
$fn$;
"""
MIGRATIONS = {0: SCHEMA_V1, 1: SCHEMA_V2}  # from version n to n + 1

CREATE_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS moltbot_schema_version (
    version integer PRIMARY KEY,
    applied_at bigint NOT NULL
)
"""

SESSION_COLUMNS = (
    "key, agent_id, session_id, created_at, updated_at, model,"
    " input_tokens, output_tokens, total_tokens, turns, aborted_last_run"
)
MESSAGE_COLUMNS = (
    "role, content, parts, run_id, ts, status, model, input_tokens, output_tokens, error"
)

GET_SESSION = f"SELECT {SESSION_COLUMNS} FROM moltbot_sessions WHERE key = $1"

# One statement: the session row (updated_at never goes back) and the turn's messages, in
# order. The messages come in as parallel arrays, numbered so the ids follow that order.
RECORD_TURN = f"""
WITH session AS (
    INSERT INTO moltbot_sessions ({SESSION_COLUMNS})
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
    ON CONFLICT (key) DO UPDATE SET
        updated_at = greatest(moltbot_sessions.updated_at, excluded.updated_at),
        model = coalesce(excluded.model, moltbot_sessions.model),
        input_tokens = moltbot_sessions.input_tokens + excluded.input_tokens,
        output_tokens = moltbot_sessions.output_tokens + excluded.output_tokens,
        total_tokens = moltbot_sessions.total_tokens + excluded.total_tokens,
        turns = moltbot_sessions.turns + excluded.turns,
        aborted_last_run = excluded.aborted_last_run
    RETURNING {SESSION_COLUMNS}
), written AS (
    INSERT INTO moltbot_messages (session_key, session_id, {MESSAGE_COLUMNS})
    SELECT session.key, session.session_id, m.role, m.content, m.parts, $12, m.ts, $13,
           m.model, m.input_tokens, m.output_tokens, m.error
    FROM session, unnest($14::text[], $15::text[], $16::text[], $17::bigint[], $18::text[],
                         $19::bigint[], $20::bigint[], $21::text[])
         WITH ORDINALITY AS m(role, content, parts, ts, model, input_tokens, output_tokens,
                              error, n)
    ORDER BY m.n
    RETURNING id
)
SELECT {SESSION_COLUMNS}, (SELECT max(id) FROM written) FROM session
"""

# The current transcript, newest first; callers reverse it.
LAST_MESSAGES = f"""
SELECT {MESSAGE_COLUMNS} FROM moltbot_messages
WHERE session_key = $1
  AND session_id = (SELECT session_id FROM moltbot_sessions WHERE key = $1)
ORDER BY id DESC LIMIT $2
"""

# The session's head (its transcript's id and newest message id) and, unless that is the head
# given in $3/$4 (what this process remembers), its last $2 "ok" messages, newest first. A
# write anywhere moves the head (ids only grow; a reset or a delete changes the transcript),
# so a remembered history whose head is unchanged is the history.
HISTORY = """
WITH head AS MATERIALIZED (
    SELECT s.session_id,
           (SELECT max(id) FROM moltbot_messages m
            WHERE m.session_key = s.key AND m.session_id = s.session_id) AS last
    FROM moltbot_sessions s WHERE s.key = $1
)
SELECT head.session_id, head.last, m.role, m.content, m.parts
FROM head LEFT JOIN LATERAL (
    SELECT id, role, content, parts FROM moltbot_messages
    WHERE session_key = $1 AND session_id = head.session_id AND status = 'ok'
      AND (head.session_id IS DISTINCT FROM $3::text OR head.last IS DISTINCT FROM $4::bigint)
    ORDER BY id DESC LIMIT $2
) m ON true
ORDER BY m.id DESC
"""
HISTORY_CACHE_SESSIONS = 1024
BEGIN_TURN = "SELECT * FROM moltbot_begin_turn($1, $2, $3, $4::text, $5::bigint)"
# The window a turn's history is read with, fetched with its lock (the runtime's).
TURN_HISTORY_MESSAGES = 100

# Each existing key (in the order asked) with its last $2 messages, newest first.
PREVIEW = f"""
SELECT s.key, m.{MESSAGE_COLUMNS.replace(", ", ", m.")}
FROM unnest($1::text[]) WITH ORDINALITY AS asked(key, n)
JOIN moltbot_sessions s ON s.key = asked.key
LEFT JOIN LATERAL (
    SELECT id, {MESSAGE_COLUMNS} FROM moltbot_messages
    WHERE session_key = s.key AND session_id = s.session_id
    ORDER BY id DESC LIMIT $2
) m ON true
ORDER BY asked.n, m.id DESC
"""

RESET_SESSION = f"""
UPDATE moltbot_sessions SET session_id = $1, updated_at = $2, input_tokens = 0,
    output_tokens = 0, total_tokens = 0, turns = 0, aborted_last_run = false
WHERE key = $3
RETURNING {SESSION_COLUMNS}
"""

DELETE_SESSION = "DELETE FROM moltbot_sessions WHERE key = $1"  # messages go by CASCADE

# No index: an admin's look-up, for keys too long to send back.
KEY_OF_SESSION_ID = "SELECT key FROM moltbot_sessions WHERE session_id = $1"

# What the Responses endpoint remembers (see SqliteStore.save_response): the session's
# transcript and turn count as they are now; nothing when the session does not exist. Expired
# rows go in the same statement.
SAVE_RESPONSE = """
WITH purged AS (DELETE FROM moltbot_responses WHERE expires_at <= $6)
INSERT INTO moltbot_responses (id, session_key, session_id, turns, created_at, expires_at, body)
SELECT $1, key, session_id, turns, $2, $3, $4 FROM moltbot_sessions WHERE key = $5
"""

GET_RESPONSE = """
SELECT r.session_key, r.created_at, r.expires_at, r.body,
       s.session_id <> r.session_id, s.turns - r.turns
FROM moltbot_responses r JOIN moltbot_sessions s ON s.key = r.session_key
WHERE r.id = $1 AND r.expires_at > $2
"""

# The row as it is after the insert, whether this statement or an earlier one made it.
ENSURE_SESSION = f"""
WITH made AS (
    INSERT INTO moltbot_sessions ({SESSION_COLUMNS})
    VALUES ($1, $2, $3, $4, $4, NULL, 0, 0, 0, 0, false)
    ON CONFLICT (key) DO NOTHING
    RETURNING {SESSION_COLUMNS}
)
SELECT {SESSION_COLUMNS} FROM made
UNION ALL
SELECT {SESSION_COLUMNS} FROM moltbot_sessions WHERE key = $1 AND NOT EXISTS (SELECT 1 FROM made)
"""

LIST_PAGE = (
    "SELECT {columns} FROM moltbot_sessions{where}"
    " ORDER BY updated_at DESC, key DESC LIMIT ${limit} OFFSET ${offset}"
)
LIST_COUNT = "SELECT count(*) FROM moltbot_sessions{where}"
# ASCII-only case folding, as SQLite's LIKE does: the two backends match the same keys.
ASCII_UPPER, ASCII_LOWER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz"
FOLD_ASCII = str.maketrans(ASCII_UPPER, ASCII_LOWER)

CLAIM_RUN = """
INSERT INTO moltbot_runs (run_id, session_key, accepted_at) VALUES ($1, $2, $3)
ON CONFLICT (run_id) DO NOTHING
"""
GET_RUN = (
    "SELECT run_id, session_key, accepted_at, ended_at, outcome FROM moltbot_runs WHERE run_id = $1"
)
END_RUN = "UPDATE moltbot_runs SET ended_at = $2, outcome = $3 WHERE run_id = $1"
# Runs are remembered for idempotency this long: older rows are deleted when a store opens.
RUN_RETENTION_MS = 24 * 3600 * 1000
FORGET_OLD_RUNS = "DELETE FROM moltbot_runs WHERE accepted_at < $1"


# --- Values in and out -------------------------------------------------------------------------


def pg_text(text: str) -> str:
    """PostgreSQL text cannot hold NUL."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def pg_optional(text: str | None) -> str | None:
    return None if text is None else pg_text(text)


def session_lock_id(key: str) -> int:
    """The advisory lock of a session: 64 bits of a hash of its key (a collision only makes
    two sessions wait for each other)."""
    digest = hashlib.sha256(SESSION_LOCK_SALT + key.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def message_columns(message: Message) -> tuple[str, str, str | None]:
    """(role, content, parts): plain text stays in `content` alone, unless it holds a NUL,
    which only the JSON of `parts` can carry."""
    text = message.text
    if message.is_plain_text and "\x00" not in text:
        return message.role, text, None
    parts = json.dumps(message_to_json(message), ensure_ascii=False, separators=(",", ":"))
    return message.role, pg_text(text), parts.replace("\x00", "\\u0000")


def turn_arguments(turn: TurnRecord) -> list[Any]:
    """The parameters of RECORD_TURN. The reply (the last assistant message) carries the
    model, tokens and error; it and what follows it (its tool calls' results) end the turn."""
    key, agent_id, session_id, created, updated, model, *totals, turns, aborted = session_values(
        turn
    )
    usage = turn.usage
    columns = [message_columns(m) for m in turn.messages]
    reply = reply_index(turn.messages)

    def on_reply(value: Any) -> list[Any]:
        return [value if i == reply else None for i in range(len(columns))]

    return [
        pg_text(key), pg_text(agent_id), session_id, created, updated, pg_optional(model),
        *totals, turns, bool(aborted),
        pg_text(turn.run_id), turn.status,
        [c[0] for c in columns],
        [c[1] for c in columns],
        [c[2] for c in columns],
        [turn.started_at if i < reply else turn.ended_at for i in range(len(columns))],
        on_reply(pg_optional(turn.model)),
        on_reply(usage.input_tokens if usage else None),
        on_reply(usage.output_tokens if usage else None),
        on_reply(pg_optional(turn.error)),
    ]  # fmt: skip


def session_from_record(row: asyncpg.Record) -> SessionInfo:
    return SessionInfo(*row[:10], aborted_last_run=bool(row[10]))


def message_from_record(row: Sequence[Any]) -> TranscriptMessage:
    return TranscriptMessage(stored_message(row[0], row[1], row[2]), *row[3:])


def list_filter(
    agent_id: str | None, search: str | None, since: int | None
) -> tuple[str, list[Any]]:
    """The WHERE clause of list() and its parameters ($1, $2, ...)."""
    clauses: list[str] = []
    params: list[Any] = []
    if agent_id is not None:
        params.append(pg_text(agent_id))
        clauses.append(f"agent_id = ${len(params)}")
    if search:
        params.append(like_pattern(pg_text(search)).translate(FOLD_ASCII))
        clauses.append(
            f"translate(key, '{ASCII_UPPER}', '{ASCII_LOWER}') LIKE ${len(params)} ESCAPE '\\'"
        )
    if since is not None:
        params.append(since)
        clauses.append(f"updated_at >= ${len(params)}")
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def store_error(operation: str, exc: BaseException) -> SessionStoreError:
    why = str(exc) or ("timed out" if isinstance(exc, TimeoutError) else type(exc).__name__)
    return SessionStoreError(f"session store {operation} failed: {why}")


DATABASE_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


# --- Opening -------------------------------------------------------------------------------------


async def migrate(conn: asyncpg.Connection) -> None:
    """Bring the schema to SCHEMA_VERSION, once, whoever else starts at the same time."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute(CREATE_VERSION_TABLE)
        version = await conn.fetchval("SELECT max(version) FROM moltbot_schema_version") or 0
        if version > SCHEMA_VERSION:
            raise SessionStoreError(
                f"session store schema version {version} is newer than this build's "
                f"{SCHEMA_VERSION}"
            )
        for step in range(version, SCHEMA_VERSION):
            await conn.execute(MIGRATIONS[step])
            await conn.execute(
                "INSERT INTO moltbot_schema_version (version, applied_at) VALUES ($1, $2)",
                step + 1,
                wall_clock_ms(),
            )


class PostgresStore:
    """Sessions and transcripts in PostgreSQL. Open with `await PostgresStore.open(config)`."""

    def __init__(self, pool: ConnectionPool, dsn: str, now_ms: Callable[[], int]) -> None:
        self._pool = pool
        self._now_ms = now_ms
        # Sessions whose turn lock this process holds, and the connection holding it.
        self._turns: dict[str, asyncpg.Connection] = {}
        # key -> (session_id, newest message id, max_messages, history) as last read/written.
        self._history: OrderedDict[str, tuple[str, int | None, int, list[Message]]] = OrderedDict()
        self._fresh: set[str] = set()  # keys whose history was read under their turn lock
        # What turn_lock read with the lock, for the turn's one prompt_history call.
        self._prefetched: dict[str, tuple[int, tuple[str | None, int | None], list[Any]]] = {}
        self._closing = False
        self.runs = PostgresRuns(self)
        self.channel = PostgresChannel(self, dsn)

    @classmethod
    async def open(
        cls, config: PostgresConfig, *, now_ms: Callable[[], int] = wall_clock_ms
    ) -> PostgresStore:
        pool = ConnectionPool(
            config.dsn,
            config.pool_min,
            config.pool_max,
            timeout=CONNECT_TIMEOUT_SECONDS,
            command_timeout=COMMAND_TIMEOUT_SECONDS,
        )
        try:
            await pool.start()
        except (*DATABASE_ERRORS, ValueError) as exc:
            pool.terminate()
            raise store_error("open", exc) from None
        store = cls(pool, config.dsn, now_ms)
        try:
            async with pool.acquire(ACQUIRE_TIMEOUT_SECONDS) as conn:
                await migrate(conn)
                await conn.execute(FORGET_OLD_RUNS, now_ms() - RUN_RETENTION_MS)
            await store.channel.start()
        except SessionStoreError:
            pool.terminate()
            raise
        except (*DATABASE_ERRORS, ValueError) as exc:
            pool.terminate()
            raise store_error("open", exc) from None
        log.info("session store open", backend="postgres", dsn=dsn_without_password(config.dsn))
        return store

    async def close(self) -> None:
        """Wait (bounded) for calls in progress, then close every connection."""
        if self._closing:
            return
        self._closing = True
        await self.channel.close()
        try:
            await asyncio.wait_for(self._pool.close(), ACQUIRE_TIMEOUT_SECONDS)
        except (TimeoutError, *DATABASE_ERRORS):
            self._pool.terminate()

    # -- running statements ---------------------------------------------------------------

    async def _run(self, operation: str, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """`work` on a pooled connection; database failures become SessionStoreError."""
        if self._closing:
            raise SessionStoreError("session store is closed")
        try:
            async with self._pool.acquire(ACQUIRE_TIMEOUT_SECONDS) as conn:
                return await work(conn)
        except PoolClosed:
            raise SessionStoreError("session store is closed") from None
        except DATABASE_ERRORS as exc:
            raise store_error(operation, exc) from None

    async def _on_turn_connection(
        self, key: str, operation: str, work: Callable[[asyncpg.Connection], Awaitable[T]]
    ) -> T:
        """On the connection holding `key`'s turn lock when this process holds it (what the
        turn reads and writes then follows the lock), else on a pooled one."""
        conn = self._turns.get(key)
        if conn is None:
            return await self._run(operation, work)
        try:
            return await work(conn)
        except DATABASE_ERRORS as exc:
            raise store_error(operation, exc) from None

    # -- the store's methods ----------------------------------------------------------------

    async def get(self, key: str) -> SessionInfo | None:
        row = await self._run("get", lambda c: c.fetchrow(GET_SESSION, pg_text(key)))
        return session_from_record(row) if row else None

    async def prompt_history(self, key: str, max_messages: int = 100) -> list[Message]:
        """The model's context: the current transcript's "ok" turns, oldest first, at most the
        last `max_messages` messages, starting at a user message. What this process read or
        wrote last is reused when the session's head shows nobody wrote since (see HISTORY).
        Under the turn lock it usually came with the lock (see turn_lock)."""
        prefetched = self._prefetched.pop(key, None)
        if prefetched is not None and prefetched[0] == max_messages:
            _, head, rows = prefetched
        else:
            head = self._known_head(key, max_messages)
            rows = await self._read_history(key, max_messages, head)
        history = self._history_from(key, max_messages, head, rows)
        if history is None:  # what was remembered went meanwhile: read it whole
            rows = await self._read_history(key, max_messages, (None, None))
            history = self._history_from(key, max_messages, (None, None), rows)
        assert history is not None  # a read with no known head always has the rows
        return history

    async def _read_history(
        self, key: str, max_messages: int, head: tuple[str | None, int | None]
    ) -> list[asyncpg.Record]:
        return await self._on_turn_connection(
            key,
            "prompt_history",
            lambda c: c.fetch(HISTORY, pg_text(key), max(0, max_messages), *head),
        )

    def _known_head(self, key: str, max_messages: int) -> tuple[str | None, int | None]:
        known = self._history.get(key)
        if known is None or known[2] != max_messages:
            return None, None
        return known[0], known[1]

    def _history_from(
        self,
        key: str,
        max_messages: int,
        head: tuple[str | None, int | None],
        rows: Sequence[Sequence[Any]],
    ) -> list[Message] | None:
        """The history of `rows` (HISTORY's), or the remembered one when its head is `head`;
        None when the database's head is `head` (so `rows` has no messages) but this process
        no longer remembers that history (evicted, or dropped by a write in between)."""
        if not rows:  # no such session
            self._history.pop(key, None)
            return []
        now = (rows[0][0], rows[0][1])
        if key in self._turns:
            self._fresh.add(key)  # read under the turn lock: record_turn may carry it on
        if head[0] is not None and now == head:
            known = self._history.get(key)
            if known is None or (known[0], known[1], known[2]) != (*now, max_messages):
                return None
            self._history.move_to_end(key)
            return list(known[3])
        messages = [stored_message(r[2], r[3], r[4]) for r in reversed(rows) if r[2] is not None]
        window = history_window(messages, max_messages)
        self._remember(key, (*now, max_messages, window))
        return list(window)

    async def record_turn(self, turn: TurnRecord) -> SessionInfo:
        """Write a finished run, all or nothing, in one statement; returns after COMMIT."""
        arguments = turn_arguments(turn)
        fresh = turn.key in self._fresh and turn.key in self._turns
        try:
            row = await self._on_turn_connection(
                turn.key, "record_turn", lambda c: c.fetchrow(RECORD_TURN, *arguments)
            )
        except BaseException:
            self._history.pop(turn.key, None)
            raise
        info = session_from_record(row)
        known = self._history.pop(turn.key, None)
        # Carried on only if read under this same lock hold: then nobody else wrote between.
        if fresh and known is not None and known[0] == info.session_id:
            _, _, limit, messages = known
            if turn.status == "ok":
                # Image bytes are not kept, as a read from the database would not have them.
                added = [without_image_bytes(m) for m in turn.messages]
                messages = history_window([*messages, *added], limit)
            self._remember(turn.key, (info.session_id, row[11], limit, messages))
        return info

    def _remember(self, key: str, entry: tuple[str, int | None, int, list[Message]]) -> None:
        self._history[key] = entry
        self._history.move_to_end(key)
        if len(self._history) > HISTORY_CACHE_SESSIONS:
            self._history.popitem(last=False)

    async def messages(self, key: str, limit: int = 200) -> list[TranscriptMessage]:
        rows = await self._run(
            "messages", lambda c: c.fetch(LAST_MESSAGES, pg_text(key), max(0, limit))
        )
        return [message_from_record(row) for row in reversed(rows)]

    async def preview(
        self, keys: Sequence[str], limit: int = 12
    ) -> dict[str, list[TranscriptMessage]]:
        asked = [pg_text(k) for k in dict.fromkeys(keys)]
        by_stored = {pg_text(k): k for k in keys}
        rows = await self._run("preview", lambda c: c.fetch(PREVIEW, asked, max(0, limit)))
        found: dict[str, list[TranscriptMessage]] = {}
        for row in rows:
            messages = found.setdefault(by_stored.get(row[0], row[0]), [])
            if row[1] is not None:
                messages.insert(0, message_from_record(row[1:]))
        return found

    async def reset(self, key: str) -> SessionInfo | None:
        now, session_id = self._now_ms(), str(uuid.uuid4())
        row = await self._run(
            "reset", lambda c: c.fetchrow(RESET_SESSION, session_id, now, pg_text(key))
        )
        return session_from_record(row) if row else None

    async def delete(self, key: str) -> bool:
        status = await self._run("delete", lambda c: c.execute(DELETE_SESSION, pg_text(key)))
        return status != "DELETE 0"

    async def ensure(self, key: str, agent_id: str) -> SessionInfo:
        now, session_id = self._now_ms(), str(uuid.uuid4())
        row = await self._run(
            "ensure",
            lambda c: c.fetchrow(ENSURE_SESSION, pg_text(key), pg_text(agent_id), session_id, now),
        )
        return session_from_record(row)

    async def key_of(self, session_id: str) -> str | None:
        return await self._run(
            "key_of", lambda c: c.fetchval(KEY_OF_SESSION_ID, pg_text(session_id))
        )

    async def save_response(self, record: ResponseRecord) -> bool:
        values = (
            pg_text(record.id), record.created_at, record.expires_at,
            pg_optional(record.body), pg_text(record.session_key), self._now_ms(),
        )  # fmt: skip
        status = await self._run("save_response", lambda c: c.execute(SAVE_RESPONSE, *values))
        return status != "INSERT 0 0"

    async def get_response(self, response_id: str) -> StoredResponse | None:
        row = await self._run(
            "get_response",
            lambda c: c.fetchrow(GET_RESPONSE, pg_text(response_id), self._now_ms()),
        )
        if row is None:
            return None
        key, created_at, expires_at, body, reset_since, turns_since = row
        return StoredResponse(
            response_id, key, created_at, expires_at, body, bool(reset_since), turns_since
        )

    # -- turns of one session, one at a time across processes -------------------------------

    @asynccontextmanager
    async def turn_lock(self, key: str) -> AsyncIterator[None]:
        """Hold `key`'s advisory lock for a turn. Waiting can be cancelled (a deadline, an
        abort); the lock goes away with the connection if this process dies."""
        if self._closing:
            raise SessionStoreError("session store is closed")
        lock = session_lock_id(key)
        try:
            conn = await self._pool.take(ACQUIRE_TIMEOUT_SECONDS)
        except PoolClosed:
            raise SessionStoreError("session store is closed") from None
        except DATABASE_ERRORS as exc:
            raise store_error("turn_lock", exc) from None
        limit = TURN_HISTORY_MESSAGES
        head = self._known_head(key, limit)
        try:
            # Not bounded by the statement timeout: the caller's deadline cancels the wait.
            rows = await conn.fetch(
                BEGIN_TURN, lock, pg_text(key), limit, *head, timeout=LOCK_WAIT_SECONDS
            )
        except BaseException as exc:
            # Cancelled, perhaps just after the lock was granted: closing the connection
            # drops its locks with it.
            self._pool.give_back(conn, broken=True)
            if isinstance(exc, DATABASE_ERRORS):
                raise store_error("turn_lock", exc) from None
            raise
        self._turns[key] = conn
        self._prefetched[key] = (limit, head, rows)  # for the turn's prompt_history
        try:
            yield
        finally:
            del self._turns[key]
            self._fresh.discard(key)
            self._prefetched.pop(key, None)
            await asyncio.shield(self._unlock(conn, lock))

    async def _unlock(self, conn: asyncpg.Connection, lock: int) -> None:
        try:
            await conn.execute("SELECT pg_advisory_unlock($1)", lock)
        except BaseException as exc:
            log.warning("could not unlock a session; dropping its connection", error=repr(exc))
            self._pool.give_back(conn, broken=True)  # the lock goes with the connection
            if not isinstance(exc, Exception):
                raise
            return
        self._pool.give_back(conn)

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
        since = None if active_minutes is None else self._now_ms() - active_minutes * 60_000
        where, params = list_filter(agent_id, search, since)
        n = len(params)
        page = LIST_PAGE.format(columns=SESSION_COLUMNS, where=where, limit=n + 1, offset=n + 2)
        count = LIST_COUNT.format(where=where)

        async def read(conn: asyncpg.Connection) -> tuple[list[SessionInfo], int]:
            rows = await conn.fetch(page, *params, max(0, limit), max(0, offset))
            total = await conn.fetchval(count, *params)
            return [session_from_record(r) for r in rows], total

        return await self._run("list", read)


class PostgresRuns:
    """The runs table: run ids claimed by any process, for idempotency across replicas."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    async def claim(self, run_id: str, session_key: str, accepted_at: int) -> RunRecord | None:
        async def claim(conn: asyncpg.Connection) -> RunRecord | None:
            key = pg_text(session_key)
            status = await conn.execute(CLAIM_RUN, pg_text(run_id), key, accepted_at)
            if status == "INSERT 0 1":
                return None
            return run_from_record(await conn.fetchrow(GET_RUN, pg_text(run_id)))

        return await self._store._run("claim_run", claim)

    async def get(self, run_id: str) -> RunRecord | None:
        row = await self._store._run("get_run", lambda c: c.fetchrow(GET_RUN, pg_text(run_id)))
        return run_from_record(row) if row else None

    async def end(self, run_id: str, ended_at: int, outcome: dict[str, Any]) -> None:
        text = json.dumps(outcome, ensure_ascii=False, separators=(",", ":"))
        await self._store._run(
            "end_run", lambda c: c.execute(END_RUN, pg_text(run_id), ended_at, text)
        )


def run_from_record(row: Sequence[Any]) -> RunRecord:
    run_id, session_key, accepted_at, ended_at, outcome = row
    return RunRecord(
        run_id, session_key, accepted_at, ended_at, json.loads(outcome) if outcome else None
    )
