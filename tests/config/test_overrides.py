"""Env and CLI layered over the file: port, bind, auth secrets and mode."""

from __future__ import annotations

from pathlib import Path

import pytest

from moltbot.config import ConfigError
from tests.config.helpers import load, load_error, problem_at

PORT_FILE = "{gateway: {port: 1111}}"


def test_port_default(tmp_path: Path) -> None:
    assert load(tmp_path, "{}").config.gateway.port == 18789


def test_port_from_file(tmp_path: Path) -> None:
    assert load(tmp_path, PORT_FILE).config.gateway.port == 1111


def test_legacy_env_port_beats_file(tmp_path: Path) -> None:
    env = {"CLAWDBOT_GATEWAY_PORT": "3333"}
    assert load(tmp_path, PORT_FILE, env=env).config.gateway.port == 3333


def test_new_env_port_beats_legacy_env_port(tmp_path: Path) -> None:
    env = {"MOLTBOT_GATEWAY_PORT": "2222", "CLAWDBOT_GATEWAY_PORT": "3333"}
    assert load(tmp_path, PORT_FILE, env=env).config.gateway.port == 2222


def test_cli_port_beats_env_port(tmp_path: Path) -> None:
    env = {"MOLTBOT_GATEWAY_PORT": "2222"}
    assert load(tmp_path, PORT_FILE, env=env, port=4444).config.gateway.port == 4444


def test_cli_port_skips_a_broken_env_port(tmp_path: Path) -> None:
    env = {"MOLTBOT_GATEWAY_PORT": "oops"}
    assert load(tmp_path, PORT_FILE, env=env, port=4444).config.gateway.port == 4444


def test_env_port_from_the_env_block(tmp_path: Path) -> None:
    text = '{env: {MOLTBOT_GATEWAY_PORT: "5555"}, gateway: {port: 1111}}'
    assert load(tmp_path, text).config.gateway.port == 5555


def test_blank_env_port_is_ignored(tmp_path: Path) -> None:
    assert load(tmp_path, PORT_FILE, env={"MOLTBOT_GATEWAY_PORT": " "}).config.gateway.port == 1111


@pytest.mark.parametrize("value", ["abc", "80.5", "0", "70000", "-1"])
def test_bad_env_port_names_the_variable(tmp_path: Path, value: str) -> None:
    error = load_error(tmp_path, PORT_FILE, env={"CLAWDBOT_GATEWAY_PORT": value})
    assert problem_at(error, "CLAWDBOT_GATEWAY_PORT") == (
        f'expected an integer port from 1 to 65535, got "{value}"'
    )


def test_bad_cli_port(tmp_path: Path) -> None:
    error = load_error(tmp_path, "{}", port=0)
    assert problem_at(error, "--port") == "expected an integer port from 1 to 65535, got 0"


def test_cli_bind_overrides_file(tmp_path: Path) -> None:
    config = load(tmp_path, '{gateway: {bind: "lan"}}', bind="10.1.2.3").config
    assert config.gateway.bind == "10.1.2.3"
    assert config.gateway.host == "10.1.2.3"


def test_file_bind_used_without_cli_bind(tmp_path: Path) -> None:
    assert load(tmp_path, '{gateway: {bind: "lan"}}').config.gateway.host == "0.0.0.0"


def test_cli_bind_is_validated_like_the_file(tmp_path: Path) -> None:
    error = load_error(tmp_path, "{}", bind="everywhere")
    assert problem_at(error, "--bind") == (
        'expected "loopback", "lan" or an IP address, got "everywhere"'
    )


def test_cli_and_env_problems_are_reported_together(tmp_path: Path) -> None:
    error = load_error(tmp_path, "{}", env={"MOLTBOT_GATEWAY_PORT": "x"}, bind="nowhere")
    assert len(error.problems) == 2


def test_file_token_beats_env_token(tmp_path: Path) -> None:
    env = {"MOLTBOT_GATEWAY_TOKEN": "env-token"}
    auth = load(tmp_path, '{gateway: {auth: {token: "file-token"}}}', env=env).config.gateway.auth
    assert auth.token == "file-token"


def test_env_token_fills_missing_token(tmp_path: Path) -> None:
    env = {"MOLTBOT_GATEWAY_TOKEN": "new", "CLAWDBOT_GATEWAY_TOKEN": "old"}
    auth = load(tmp_path, "{}", env=env).config.gateway.auth
    assert (auth.mode, auth.token, auth.secret) == ("token", "new", "new")


def test_legacy_env_token_used_alone(tmp_path: Path) -> None:
    env = {"CLAWDBOT_GATEWAY_TOKEN": "old"}
    assert load(tmp_path, "{}", env=env).config.gateway.auth.token == "old"


def test_env_password_fills_and_derives_password_mode(tmp_path: Path) -> None:
    env = {"MOLTBOT_GATEWAY_PASSWORD": "pw", "CLAWDBOT_GATEWAY_PASSWORD": "old"}
    auth = load(tmp_path, "{}", env=env).config.gateway.auth
    assert (auth.mode, auth.password, auth.token) == ("password", "pw", None)


def test_legacy_env_password_used_alone(tmp_path: Path) -> None:
    env = {"CLAWDBOT_GATEWAY_PASSWORD": "old"}
    assert load(tmp_path, "{}", env=env).config.gateway.auth.password == "old"


def test_file_password_beats_env_password(tmp_path: Path) -> None:
    env = {"MOLTBOT_GATEWAY_PASSWORD": "env-pw"}
    auth = load(tmp_path, '{gateway: {auth: {password: "file-pw"}}}', env=env).config.gateway.auth
    assert (auth.mode, auth.password) == ("password", "file-pw")


def test_token_and_password_without_mode_means_token(tmp_path: Path) -> None:
    text = '{gateway: {auth: {token: "t", password: "p"}}}'
    assert load(tmp_path, text).config.gateway.auth.mode == "token"


def test_no_secret_at_all_means_token_mode(tmp_path: Path) -> None:
    auth = load(tmp_path, "{}").config.gateway.auth
    assert (auth.mode, auth.token, auth.password) == ("token", None, None)


def test_explicit_mode_is_kept(tmp_path: Path) -> None:
    text = '{gateway: {auth: {mode: "token"}}}'
    auth = load(tmp_path, text, env={"MOLTBOT_GATEWAY_PASSWORD": "pw"}).config.gateway.auth
    assert (auth.mode, auth.password) == ("token", "pw")


def test_env_block_token_is_used(tmp_path: Path) -> None:
    text = '{env: {MOLTBOT_GATEWAY_TOKEN: "from-block"}}'
    assert load(tmp_path, text).config.gateway.auth.token == "from-block"


def test_override_errors_are_config_errors_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, "{}", port=70000)
    assert info.value.path == tmp_path / "moltbot.json5"
