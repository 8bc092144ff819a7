"""session.store (SQLite path, or a backend object), gateway.workers and gateway.eventLoop."""

from __future__ import annotations

import json
from pathlib import Path

from moltbot.config import redacted
from tests.config.helpers import load, load_error, problem_at

PG = '{backend: "postgres", dsn: "postgres://moltbot:pw-SECRET@db.internal:5432/moltbot"}'


def test_the_plain_path_form_still_means_sqlite(tmp_path: Path) -> None:
    config = load(tmp_path, '{session: {store: "/data/s.sqlite"}}').config
    assert config.session.backend == "sqlite"
    assert config.session_store_path == Path("/data/s.sqlite")
    assert config.session_store_location == "/data/s.sqlite"


def test_the_sqlite_object_form(tmp_path: Path) -> None:
    config = load(tmp_path, '{session: {store: {backend: "sqlite", path: "s.db"}}}').config
    assert config.session.backend == "sqlite"
    assert config.session_store_path == tmp_path / "s.db"  # relative to the config file
    default = load(tmp_path, '{session: {store: {backend: "sqlite"}}}').config
    assert default.session_store_path == default.state_dir / "sessions.sqlite"


def test_the_postgres_form_with_env_and_pool(tmp_path: Path) -> None:
    text = (
        '{session: {store: {backend: "postgres", dsn: "${MOLTBOT_PG_DSN}",'
        " pool: {min: 0, max: 4}}}}"
    )
    env = {"MOLTBOT_PG_DSN": "postgresql://u:secret@127.0.0.1/db"}
    config = load(tmp_path, text, env=env).config
    assert config.session.backend == "postgres"
    assert config.session.postgres is not None
    assert config.session.postgres.dsn == "postgresql://u:secret@127.0.0.1/db"
    assert (config.session.postgres.pool_min, config.session.postgres.pool_max) == (0, 4)
    assert config.session_store_location == "postgresql://u:***@127.0.0.1/db"
    assert "secret" not in repr(config)


def test_postgres_store_problems_are_all_reported(tmp_path: Path) -> None:
    error = load_error(
        tmp_path,
        '{session: {store: {backend: "postgres", dsn: "mysql://u:pw-SECRET@h/db",'
        ' pool: {min: 5, max: 0, size: 3}, path: "x"}}}',
    )
    assert problem_at(error, "session.store.dsn") == "expected a postgres:// or postgresql:// URL"
    assert (
        problem_at(error, "session.store.pool.max")
        == "expected an integer from 1 to 1000, got integer 0"
    )
    assert problem_at(error, "session.store.pool.size").startswith("unknown key")
    assert problem_at(error, "session.store.path").startswith("unknown key")
    assert "pw-SECRET" not in str(error)
    missing = load_error(tmp_path, '{session: {store: {backend: "postgres"}}}')
    assert problem_at(missing, "session.store.dsn") == "required key is missing"
    order = load_error(
        tmp_path,
        '{session: {store: {backend: "postgres", dsn: "postgres://h/d", pool: {min: 9, max: 2}}}}',
    )
    assert problem_at(order, "session.store.pool") == "min (9) must not exceed max (2)"


def test_an_unknown_backend_gets_a_suggestion(tmp_path: Path) -> None:
    error = load_error(tmp_path, '{session: {store: {backend: "postgre", dsn: "postgres://h/d"}}}')
    assert problem_at(error, "session.store.backend") == (
        'expected "sqlite" or "postgres", got "postgre" (did you mean "postgres"?)'
    )


def test_workers_and_event_loop(tmp_path: Path) -> None:
    config = load(
        tmp_path, f'{{gateway: {{workers: 3, eventLoop: "asyncio"}}, session: {{store: {PG}}}}}'
    ).config
    assert (config.gateway.workers, config.gateway.event_loop) == (3, "asyncio")
    assert load(tmp_path, "{}").config.gateway.event_loop == "auto"
    error = load_error(tmp_path, '{gateway: {workers: 0, eventLoop: "tokio"}}')
    assert problem_at(error, "gateway.workers") == "expected an integer from 1 to 64, got integer 0"
    assert problem_at(error, "gateway.eventLoop").startswith('expected "auto", "asyncio" or')


def test_several_workers_on_sqlite_are_refused_with_the_reason(tmp_path: Path) -> None:
    error = load_error(tmp_path, "{gateway: {workers: 2}}")
    assert problem_at(error, "gateway.workers") == (
        "2 workers need the postgres session store: with SQLite the gateway is one process, "
        "since per-process turn ordering and caches cannot be shared through one file"
    )
    cli = load_error(tmp_path, "{}", workers=4)
    assert any(p.startswith("--workers: 4 workers need the postgres") for p in cli.problems)
    assert load(tmp_path, "{}", workers=1).config.gateway.workers == 1
    assert load(tmp_path, f"{{session: {{store: {PG}}}}}", workers=2).config.gateway.workers == 2


def test_config_show_masks_the_dsn_password(tmp_path: Path) -> None:
    shown = redacted(load(tmp_path, f"{{session: {{store: {PG}}}}}").config)
    assert shown["session"] == {
        "store": {
            "backend": "postgres",
            "dsn": "postgres://moltbot:***@db.internal:5432/moltbot",
            "pool": {"min": 1, "max": 10},
        }
    }
    assert "pw-SECRET" not in json.dumps(shown)
    # The output is itself a valid config (the masked DSN is still a postgres:// URL).
    again = load(tmp_path, json.dumps(shown)).config
    assert again.session.backend == "postgres"


def test_a_dsn_password_counts_as_a_secret_of_the_config(tmp_path: Path) -> None:
    from moltbot.permissions import config_secrets, dsn_password

    config = load(tmp_path, f"{{session: {{store: {PG}}}}}").config
    assert ("the session store's password", "pw-SECRET") in config_secrets(config)
    assert dsn_password("postgresql://u:a%40long-enough-secret@h/db") == "a@long-enough-secret"
    assert dsn_password("postgresql://h/db?sslmode=require&password=in-the-query-1") == (
        "in-the-query-1"
    )
    assert dsn_password("postgresql://u@h/db") is None
    short = '{session: {store: {backend: "postgres", dsn: "postgres://u:pw@h/d"}}}'
    assert config_secrets(load(tmp_path, short).config) == []  # too short to look for
