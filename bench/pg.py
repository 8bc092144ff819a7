"""A PostgreSQL database for the bench's `--workers` phase: made fresh for the run on the
machine's server (or `--pg-dsn`), dropped at the end. No server: the phase is skipped."""

from __future__ import annotations

import secrets

import asyncpg

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
CONNECT_TIMEOUT = 5.0


async def _execute(admin_dsn: str, statement: str) -> None:
    conn = await asyncpg.connect(admin_dsn, timeout=CONNECT_TIMEOUT)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def create_database(admin_dsn: str) -> tuple[str, str]:
    """(name, DSN) of a new, empty database. Raises OSError/asyncpg errors when unreachable."""
    name = f"moltbot_bench_{secrets.token_hex(6)}"
    await _execute(admin_dsn, f"CREATE DATABASE {name}")
    return name, f"{admin_dsn.rsplit('/', 1)[0]}/{name}"


async def drop_database(admin_dsn: str, name: str) -> None:
    await _execute(admin_dsn, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
