"""The `env` block and `${VAR}` substitution."""

from __future__ import annotations

import os
from pathlib import Path

from tests.config.helpers import load, load_error, problem_at


def test_variable_is_substituted(tmp_path: Path) -> None:
    config = load(tmp_path, '{gateway: {auth: {token: "${TOK}"}}}', env={"TOK": "s3cret"}).config
    assert config.gateway.auth.token == "s3cret"


def test_inline_substitution(tmp_path: Path) -> None:
    text = '{models: {providers: {p: {baseUrl: "${BASE}/v1", api: "openai-completions"}}}}'
    config = load(tmp_path, text, env={"BASE": "http://h:8000"}).config
    assert config.models.providers[0].base_url == "http://h:8000/v1"


def test_several_variables_in_one_string(tmp_path: Path) -> None:
    provider = '{local: {baseUrl: "http://127.0.0.1:9/v1", api: "openai-completions"}}'
    text = "{models: {providers: " + provider + '}, agents: {defaults: {model: "${P}/${M}"}}}'
    config = load(tmp_path, text, env={"P": "local", "M": "qwen"}).config
    assert config.agents.defaults.model.primary == "local/qwen"


def test_missing_variable_names_variable_and_config_path(tmp_path: Path) -> None:
    text = '{gateway: {trustedProxies: ["10.0.0.1", "${PROXY}"]}}'
    error = load_error(tmp_path, text)
    assert error.problems == [
        'missing env var "PROXY" referenced at config path: gateway.trustedProxies[1]'
    ]
    assert str(error).startswith("Invalid config at ")


def test_empty_variable_counts_as_missing(tmp_path: Path) -> None:
    error = load_error(tmp_path, '{gateway: {auth: {token: "${TOK}"}}}', env={"TOK": ""})
    assert error.problems == ['missing env var "TOK" referenced at config path: gateway.auth.token']


def test_all_missing_variables_are_reported_together(tmp_path: Path) -> None:
    text = '{gateway: {auth: {token: "${A}", password: "${B}"}}}'
    assert len(load_error(tmp_path, text).problems) == 2


def test_double_dollar_escapes_to_literal(tmp_path: Path) -> None:
    config = load(tmp_path, '{agents: {list: [{id: "a", name: "$${NAME}"}]}}').config
    assert config.agents.list[0].name == "${NAME}"


def test_lowercase_and_other_braces_are_left_verbatim(tmp_path: Path) -> None:
    text = '{agents: {list: [{id: "a", name: "${lower} ${1X} ${A-B}"}]}}'
    config = load(tmp_path, text, env={"lower": "no"}).config
    assert config.agents.list[0].name == "${lower} ${1X} ${A-B}"


def test_keys_are_not_substituted(tmp_path: Path) -> None:
    text = '{models: {providers: {"${P}": {baseUrl: "http://h", api: "openai-completions"}}}}'
    config = load(tmp_path, text, env={"P": "x"}).config
    assert [provider.name for provider in config.models.providers] == ["${p}"]


def test_env_block_feeds_substitution_and_is_returned(tmp_path: Path) -> None:
    text = '{env: {BASE: "http://h:1", vars: {TOK: "t"}}, gateway: {auth: {token: "${TOK}"}}}'
    loaded = load(tmp_path, text, env={"OTHER": "1"})
    assert loaded.config.gateway.auth.token == "t"
    assert loaded.env == {"OTHER": "1", "BASE": "http://h:1", "TOK": "t"}


def test_env_block_does_not_override_an_existing_variable(tmp_path: Path) -> None:
    text = '{env: {TOK: "from-file"}, gateway: {auth: {token: "${TOK}"}}}'
    loaded = load(tmp_path, text, env={"TOK": "from-env"})
    assert loaded.config.gateway.auth.token == "from-env"
    assert loaded.env["TOK"] == "from-env"


def test_env_block_fills_a_blank_variable(tmp_path: Path) -> None:
    text = '{env: {TOK: "from-file"}, gateway: {auth: {token: "${TOK}"}}}'
    assert load(tmp_path, text, env={"TOK": " "}).config.gateway.auth.token == "from-file"


def test_env_block_never_touches_os_environ(tmp_path: Path) -> None:
    name = "MOLTBOT_TEST_ONLY_VARIABLE_XYZ"
    assert name not in os.environ
    load(tmp_path, f'{{env: {{{name}: "1"}}}}')
    assert name not in os.environ


def test_caller_env_mapping_is_not_modified(tmp_path: Path) -> None:
    env = {"A": "1"}
    load(tmp_path, '{env: {B: "2"}}', env=env)
    assert env == {"A": "1"}


def test_env_block_values_must_be_strings_and_are_not_echoed(tmp_path: Path) -> None:
    error = load_error(tmp_path, '{env: {KEY: 12345, vars: {OTHER: ["x"]}}}')
    assert problem_at(error, "env.KEY") == "expected a non-empty string, got integer"
    assert problem_at(error, "env.vars.OTHER") == "expected a non-empty string, got array"
    assert "12345" not in str(error)
