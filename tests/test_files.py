"""File modes of what holds secrets and conversations, with real files and a real gateway: the
state directory and session database are made private, config files others can read are
warned about (and left as they are), new SQLite side files are 0600."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import pytest

from moltbot.config import load_config
from moltbot.permissions import check_state_files, readable_by
from tests.conftest import StartGateway, make_config
from tests.process import child_env, free_port, gateway_process

TOKEN = "files-test-token-3e9a51"
API_KEY = "sk-files-test-8c1d77f0"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@contextmanager
def umask(value: int) -> Iterator[None]:
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


def _write(path: Path, text: str, file_mode: int) -> Path:
    path.write_text(text)
    path.chmod(file_mode)
    return path


def _older_gateways_leftovers(state_dir: Path) -> sqlite3.Connection:
    """A 0755 state dir and a 0644 database in WAL mode, held open so that its -wal and -shm
    files exist (0644 too), as a crashed older gateway leaves them."""
    state_dir.chmod(0o755)
    with umask(0o022):
        conn = sqlite3.connect(state_dir / "sessions.sqlite", isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE scratch (x)")
        conn.execute("INSERT INTO scratch VALUES (1)")
    return conn


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A 0755 directory that everyone can reach (pytest's tmp_path is under a 0700 one)."""
    path = Path(tempfile.mkdtemp(prefix="moltbot-files-"))
    try:
        path.chmod(0o755)
        probe = _write(path / "probe", "", 0o644)
        if readable_by(probe) != "the group and others":
            pytest.skip(f"{path} is below a directory others cannot enter")
        probe.unlink()
        yield path
    finally:
        shutil.rmtree(path)


async def test_the_gateway_makes_its_state_private_and_warns_about_open_configs(
    state_dir: Path, open_dir: Path
) -> None:
    leftovers = _older_gateways_leftovers(state_dir)
    db = state_dir / "sessions.sqlite"
    assert {mode(db.with_name(db.name + s)) for s in ("", "-wal", "-shm")} == {0o644}
    main = _write(
        open_dir / "moltbot.json5",
        json.dumps(
            {
                "gateway": {
                    "auth": {"token": TOKEN},
                    "http": {"endpoints": {"chatCompletions": {"enabled": True}}},
                },
                "models": {"$include": "models.json5"},
            }
        ),
        0o644,
    )
    provider = {
        "baseUrl": "http://127.0.0.1:9/v1",
        "apiKey": API_KEY,
        "api": "openai-completions",
        "models": [{"id": "m1", "name": "M1"}],
    }
    models = _write(open_dir / "models.json5", json.dumps({"providers": {"p": provider}}), 0o640)
    args = ["gateway", "--config", str(main), "--port", str(free_port())]
    try:
        with umask(0o022):
            async with gateway_process(args, child_env(state_dir)) as gateway:
                async with aiohttp.ClientSession() as http:  # a turn: the WAL is written
                    body = {"model": "moltbot", "messages": [{"role": "user", "content": "hi"}]}
                    url = f"{gateway.url}/v1/chat/completions"
                    headers = {"Authorization": f"Bearer {TOKEN}", "x-moltbot-session-key": "k"}
                    async with http.post(url, json=body, headers=headers) as resp:
                        assert resp.status == 502  # nothing on port 9; the turn is stored
                assert await gateway.stop() == 0
    finally:
        leftovers.close()
    assert mode(state_dir) == 0o700
    assert mode(db) == 0o600
    restricted = [e["path"] for e in gateway.log if e["event"].startswith("restricted perm")]
    assert str(state_dir) in restricted and str(db) in restricted
    assert {str(db) + "-wal", str(db) + "-shm"} <= set(restricted)
    warnings = [e["event"] for e in gateway.log if e.get("level") == "warning"]
    [main_warning] = [w for w in warnings if w.startswith(str(main))]
    assert "the gateway token" in main_warning
    assert "readable by the group and others" in main_warning
    assert f"chmod 600 {main}" in main_warning
    [models_warning] = [w for w in warnings if w.startswith(str(models))]
    assert "the API key of provider p" in models_warning and "by the group:" in models_warning
    assert (mode(main), mode(models)) == (0o644, 0o640)  # the user's files: left alone
    assert TOKEN not in json.dumps(gateway.log) and API_KEY not in json.dumps(gateway.log)


async def test_a_new_store_and_its_wal_files_are_private(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    state_dir = tmp_path / "fresh"  # not there yet: created by the gateway
    with umask(0o022):
        gateway = await start_gateway(make_config(state_dir))
        async with aiohttp.ClientSession() as http:
            body = {"model": "moltbot", "messages": [{"role": "user", "content": "hi"}]}
            headers = gateway.headers(**{"x-moltbot-session-key": "kept"})
            url = f"{gateway.url}/v1/chat/completions"
            async with http.post(url, json=body, headers=headers) as resp:
                assert resp.status == 200
        files = sorted(state_dir.iterdir())
        assert [f.name for f in files] == [
            "sessions.sqlite",
            "sessions.sqlite-shm",
            "sessions.sqlite-wal",
        ]
        assert mode(state_dir) == 0o700
        assert {mode(f) for f in files} == {0o600}


def test_configs_others_cannot_reach_or_without_secrets_are_not_warned_about(
    tmp_path: Path, open_dir: Path
) -> None:
    with_token = json.dumps({"gateway": {"auth": {"token": TOKEN}}})
    private_dir = open_dir / "private"
    private_dir.mkdir(mode=0o700)
    hidden = _write(private_dir / "a.json", with_token, 0o644)
    by_env = _write(open_dir / "b.json", '{gateway: {auth: {token: "${T}"}}}', 0o644)
    exposed = _write(open_dir / "c.json", with_token, 0o604)
    assert readable_by(hidden) is None  # its directory cannot be entered
    assert readable_by(exposed) == "others"
    state = {"MOLTBOT_STATE_DIR": str(tmp_path / "state")}
    for path, env, expected in ((hidden, {}, 0), (by_env, {"T": TOKEN}, 0), (exposed, {}, 1)):
        config = load_config(config_path=path, env={**state, **env}).config
        assert len(check_state_files(config)) == expected, path
