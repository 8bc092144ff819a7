from __future__ import annotations

import stat
from pathlib import Path

import pytest

from moltbot.config import ConfigError, load_config, starter_config, write_new_config
from moltbot.config.model import ECHO_MODEL_REF

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("enabled", [True, False])
def test_starter_config_round_trip(tmp_path: Path, enabled: bool) -> None:
    path = tmp_path / "moltbot.json"
    path.write_text(starter_config("abc123", chat_completions=enabled))
    config = load_config(config_path=path, env={}, home=tmp_path).config
    assert config.gateway.auth.mode == "token"
    assert config.gateway.auth.token == "abc123"
    assert config.gateway.bind == "loopback"
    assert config.gateway.http.chat_completions_enabled is enabled
    assert config.gateway.http.responses_enabled is enabled
    assert config.models.providers == ()


def test_starter_config_explains_how_to_add_a_provider() -> None:
    text = starter_config("t", chat_completions=True)
    assert "//" in text
    assert "openai-completions" in text
    assert ECHO_MODEL_REF in text


def test_starter_config_keeps_odd_tokens_literal(tmp_path: Path) -> None:
    token = 'a"b\\c${HOME}$${X}'
    path = tmp_path / "moltbot.json"
    path.write_text(starter_config(token, chat_completions=False))
    assert load_config(config_path=path, env={}, home=tmp_path).config.gateway.auth.token == token


def test_starter_config_rejects_empty_token() -> None:
    with pytest.raises(ValueError):
        starter_config(" ", chat_completions=True)


def test_write_new_config_creates_private_file_and_dir(tmp_path: Path) -> None:
    path = tmp_path / "state" / "moltbot.json"
    write_new_config(path, "{}\n")
    assert path.read_text() == "{}\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["moltbot.json"]  # no temp file left


def test_write_new_config_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "moltbot.json"
    path.write_text("original")
    with pytest.raises(ConfigError) as info:
        write_new_config(path, "{}")
    assert str(info.value) == f"config already exists at {path}; not overwriting"
    assert path.read_text() == "original"


def test_example_file_loads_and_validates(tmp_path: Path) -> None:
    env = {"MOLTBOT_GATEWAY_TOKEN": "t", "OPENAI_API_KEY": "k1", "ANTHROPIC_API_KEY": "k2"}
    loaded = load_config(config_path=REPO_ROOT / "moltbot.json5.example", env=env, home=tmp_path)
    config = loaded.config
    assert config.gateway.auth.token == "t"
    assert config.gateway.http.chat_completions_enabled is True
    assert [p.name for p in config.models.providers] == ["local", "openai", "anthropic"]
    assert config.models.providers[0].base_url == "http://127.0.0.1:8000/v1"  # from the env block
    assert config.agents.defaults.model.primary == "local/qwen2.5-7b"
    assert config.agents.defaults.workspace == tmp_path / ".moltbot" / "workspace"
    assert [agent.id for agent in config.agents.list] == ["main", "research"]
    assert loaded.notices == ()
