"""The session store the config asks for: SQLite (the default) or PostgreSQL."""

from __future__ import annotations

from moltbot.agents.store.protocol import SessionStore
from moltbot.agents.store.sqlite import SqliteStore
from moltbot.config.model import Config


async def open_store(config: Config) -> SessionStore:
    """Open (creating or migrating its schema) the store of `config.session`."""
    postgres = config.session.postgres
    if postgres is None:
        return await SqliteStore.open(config.session_store_path)
    # Imported here: a SQLite gateway never loads the database driver.
    from moltbot.agents.store.postgres import PostgresStore

    return await PostgresStore.open(postgres)
