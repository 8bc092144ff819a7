"""Reading files: JSON5, YAML, parse errors, missing files."""

from __future__ import annotations

from pathlib import Path

import pytest

from moltbot.config import ConfigError, load_config
from tests.config.helpers import load, load_error, write


def test_json5_comments_trailing_commas_and_unquoted_keys(tmp_path: Path) -> None:
    text = """
    // line comment
    {
      /* block comment */
      gateway: { port: 20000, bind: 'lan', },
      "logging": { level: "debug", },
    }
    """
    config = load(tmp_path, text).config
    assert config.gateway.port == 20000
    assert config.gateway.bind == "lan"
    assert config.logging.level == "debug"


@pytest.mark.parametrize("name", ["moltbot.yaml", "moltbot.yml"])
def test_yaml_file_is_read_by_extension(tmp_path: Path, name: str) -> None:
    text = (
        "gateway:\n"
        "  port: 21000\n"
        "  http:\n"
        "    endpoints:\n"
        "      chatCompletions:\n"
        "        enabled: true\n"
    )
    config = load(tmp_path, text, name=name).config
    assert config.gateway.port == 21000
    assert config.gateway.http.chat_completions_enabled is True


def test_json5_parse_error_names_file_line_and_column(tmp_path: Path) -> None:
    error = load_error(tmp_path, "{\n  gateway: {port: 1}\n  logging: {}\n}")
    message = str(error)
    assert message.startswith(f"Invalid config at {tmp_path / 'moltbot.json5'}: parse error")
    assert "line 3, column 3" in message
    assert "\n" not in message


def test_yaml_parse_error_has_position_but_no_file_snippet(tmp_path: Path) -> None:
    error = load_error(tmp_path, "gateway:\n  auth: [secret-value\nlogging: 1\n", name="c.yaml")
    message = str(error)
    assert "parse error in c.yaml" in message
    assert "line 3" in message
    assert "secret-value" not in message


def test_top_level_must_be_an_object(tmp_path: Path) -> None:
    error = load_error(tmp_path, "[1, 2]")
    assert error.problems == ["<root>: expected an object, got array"]


def test_missing_default_file_means_all_defaults(tmp_path: Path) -> None:
    loaded = load_config(env={"MOLTBOT_STATE_DIR": str(tmp_path / "state")}, home=tmp_path)
    assert loaded.config.gateway.port == 18789
    assert loaded.config.gateway.bind == "loopback"
    assert loaded.config.models.providers == ()
    assert any("no config file" in notice for notice in loaded.notices)


def test_missing_env_config_path_means_all_defaults(tmp_path: Path) -> None:
    env = {"MOLTBOT_CONFIG_PATH": str(tmp_path / "nope.json")}
    assert load_config(env=env, home=tmp_path).config.gateway.port == 18789


def test_missing_explicit_config_path_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json5"
    with pytest.raises(ConfigError) as info:
        load_config(config_path=missing, env={}, home=tmp_path)
    assert str(info.value) == f"config file not found: {missing}"
    assert info.value.path == missing


def test_unreadable_file_is_a_single_line_error(tmp_path: Path) -> None:
    directory = tmp_path / "dir.json5"
    directory.mkdir()
    with pytest.raises(ConfigError) as info:
        load_config(config_path=directory, env={}, home=tmp_path)
    assert "cannot read dir.json5" in str(info.value)


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    path = write(tmp_path / "conf" / "moltbot.json5", '{session: {store: "data/s.sqlite"}}')
    config = load_config(config_path=path, env={}, home=tmp_path / "home").config
    assert config.session.store == tmp_path / "conf" / "data" / "s.sqlite"


def test_tilde_paths_expand_against_home(tmp_path: Path) -> None:
    text = '{agents: {defaults: {workspace: "~/ws"}, list: [{id: "a", workspace: "~"}]}}'
    config = load(tmp_path, text).config
    assert config.agents.defaults.workspace == tmp_path / "home" / "ws"
    assert config.agents.list[0].workspace == tmp_path / "home"
