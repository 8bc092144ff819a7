from __future__ import annotations

from pathlib import Path

from moltbot.config import load_config, resolve_config_path, resolve_state_dir
from tests.config.helpers import write


def test_state_dir_defaults_to_dot_moltbot_in_home(tmp_path: Path) -> None:
    assert resolve_state_dir({}, tmp_path) == tmp_path / ".moltbot"


def test_state_dir_new_env_var_beats_legacy(tmp_path: Path) -> None:
    env = {"MOLTBOT_STATE_DIR": str(tmp_path / "new"), "CLAWDBOT_STATE_DIR": str(tmp_path / "old")}
    assert resolve_state_dir(env, tmp_path) == tmp_path / "new"


def test_state_dir_legacy_env_var_used_alone(tmp_path: Path) -> None:
    assert resolve_state_dir({"CLAWDBOT_STATE_DIR": str(tmp_path / "old")}, tmp_path) == (
        tmp_path / "old"
    )


def test_state_dir_expands_tilde_against_given_home(tmp_path: Path) -> None:
    assert resolve_state_dir({"MOLTBOT_STATE_DIR": "~/state"}, tmp_path) == tmp_path / "state"


def test_state_dir_relative_env_value_is_made_absolute(tmp_path: Path) -> None:
    resolved = resolve_state_dir({"MOLTBOT_STATE_DIR": "rel/state"}, tmp_path)
    assert resolved.is_absolute()
    assert resolved == Path.cwd() / "rel" / "state"


def test_state_dir_blank_env_var_counts_as_unset(tmp_path: Path) -> None:
    env = {"MOLTBOT_STATE_DIR": "  ", "CLAWDBOT_STATE_DIR": str(tmp_path / "old")}
    assert resolve_state_dir(env, tmp_path) == tmp_path / "old"


def test_config_path_cli_beats_env(tmp_path: Path) -> None:
    env = {"MOLTBOT_CONFIG_PATH": str(tmp_path / "env.json")}
    assert resolve_config_path(tmp_path / "cli.json", env, tmp_path) == (
        tmp_path / "cli.json",
        None,
    )


def test_config_path_new_env_beats_legacy_env(tmp_path: Path) -> None:
    env = {
        "MOLTBOT_CONFIG_PATH": str(tmp_path / "new.json"),
        "CLAWDBOT_CONFIG_PATH": str(tmp_path / "old.json"),
    }
    assert resolve_config_path(None, env, tmp_path) == (tmp_path / "new.json", None)


def test_config_path_legacy_env_used_alone(tmp_path: Path) -> None:
    env = {"CLAWDBOT_CONFIG_PATH": str(tmp_path / "old.json")}
    assert resolve_config_path(None, env, tmp_path) == (tmp_path / "old.json", None)


def test_config_path_env_beats_state_dir(tmp_path: Path) -> None:
    env = {"MOLTBOT_CONFIG_PATH": "~/x.json", "MOLTBOT_STATE_DIR": str(tmp_path / "state")}
    assert resolve_config_path(None, env, tmp_path) == (tmp_path / "x.json", None)


def test_config_path_defaults_to_state_dir_file(tmp_path: Path) -> None:
    env = {"MOLTBOT_STATE_DIR": str(tmp_path / "state")}
    assert resolve_config_path(None, env, tmp_path) == (tmp_path / "state" / "moltbot.json", None)


def test_config_path_default_in_home(tmp_path: Path) -> None:
    assert resolve_config_path(None, {}, tmp_path) == (tmp_path / ".moltbot" / "moltbot.json", None)


def test_legacy_file_used_with_notice_when_default_missing(tmp_path: Path) -> None:
    legacy = write(tmp_path / ".clawdbot" / "clawdbot.json", "{}")
    path, notice = resolve_config_path(None, {}, tmp_path)
    assert path == legacy
    assert notice is not None
    assert "using legacy config" in notice
    assert str(legacy) in notice


def test_legacy_file_ignored_when_default_exists(tmp_path: Path) -> None:
    write(tmp_path / ".clawdbot" / "clawdbot.json", "{}")
    default = write(tmp_path / ".moltbot" / "moltbot.json", "{}")
    assert resolve_config_path(None, {}, tmp_path) == (default, None)


def test_legacy_file_ignored_when_state_dir_is_overridden(tmp_path: Path) -> None:
    write(tmp_path / ".clawdbot" / "clawdbot.json", "{}")
    env = {"CLAWDBOT_STATE_DIR": str(tmp_path / "state")}
    assert resolve_config_path(None, env, tmp_path) == (tmp_path / "state" / "moltbot.json", None)


def test_load_config_reports_legacy_notice_and_reads_legacy_file(tmp_path: Path) -> None:
    write(tmp_path / ".clawdbot" / "clawdbot.json", "{gateway: {port: 4242}}")
    loaded = load_config(env={}, home=tmp_path)
    assert loaded.config.gateway.port == 4242
    assert loaded.config.config_path == tmp_path / ".clawdbot" / "clawdbot.json"
    assert any("using legacy config" in notice for notice in loaded.notices)


def test_load_config_fills_state_dir_and_config_path(tmp_path: Path) -> None:
    env = {"MOLTBOT_STATE_DIR": str(tmp_path / "state")}
    loaded = load_config(env=env, home=tmp_path)
    assert loaded.config.state_dir == tmp_path / "state"
    assert loaded.config.config_path == tmp_path / "state" / "moltbot.json"
    assert loaded.config.session_store_path == tmp_path / "state" / "sessions.sqlite"


def test_load_config_reads_file_from_env_path(tmp_path: Path) -> None:
    path = write(tmp_path / "elsewhere.json5", "{gateway: {port: 5555}}")
    loaded = load_config(env={"MOLTBOT_CONFIG_PATH": str(path)}, home=tmp_path)
    assert loaded.config.gateway.port == 5555
