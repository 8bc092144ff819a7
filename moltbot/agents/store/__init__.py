"""Session stores: the protocol the gateway uses, its records, and the backends.

protocol.py    SessionStore, RunRegistry, RunChannel: what the runtime and WS methods call
records.py     SessionInfo, TurnRecord, TranscriptMessage, ... and pure helpers
sqlite.py      SqliteStore: one file, one process (the default)
cache.py       recent prompt histories in memory (SQLite)
postgres.py    PostgresStore: one database for every worker and replica
pg_pool.py     its bounded connection pool
pg_channel.py  run notices between processes (LISTEN/NOTIFY)
factory.py     open_store(config)
"""
