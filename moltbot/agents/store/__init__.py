"""Session stores: the protocol the gateway uses, its records, and the backends.

protocol.py  SessionStore / RunRegistry: what the runtime and the WS methods call
records.py   SessionInfo, TurnRecord, TranscriptMessage, ... and pure helpers
sqlite.py    SqliteStore: one file, one process (the default)
cache.py     recent prompt histories in memory (SQLite)
postgres.py  PostgresStore: one database for every worker and replica
factory.py   open_store(config)
"""
