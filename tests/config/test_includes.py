from __future__ import annotations

from pathlib import Path

import pytest

from moltbot.config import Config, ConfigError, load_config
from tests.config.helpers import write


def _load(path: Path, env: dict[str, str] | None = None) -> Config:
    return load_config(config_path=path, env=env or {}, home=path.parent / "home").config


def _error(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        _load(path)
    return info.value


def test_single_include_replaces_the_object(tmp_path: Path) -> None:
    write(tmp_path / "gw.json5", "{port: 19000, bind: 'lan'}")
    root = write(tmp_path / "moltbot.json5", '{gateway: {"$include": "gw.json5"}}')
    gateway = _load(root).gateway
    assert (gateway.port, gateway.bind) == (19000, "lan")


def test_include_of_a_non_object_value(tmp_path: Path) -> None:
    write(tmp_path / "proxies.json5", '["10.0.0.1", "10.0.0.2"]')
    root = write(
        tmp_path / "moltbot.json5", '{gateway: {trustedProxies: {"$include": "proxies.json5"}}}'
    )
    assert _load(root).gateway.trusted_proxies == ("10.0.0.1", "10.0.0.2")


def test_include_list_deep_merges_and_concatenates_arrays(tmp_path: Path) -> None:
    write(tmp_path / "a.json5", '{gateway: {port: 1000, trustedProxies: ["10.0.0.1"]}}')
    write(
        tmp_path / "b.json5", '{gateway: {port: 2000, trustedProxies: ["10.0.0.2"], bind: "lan"}}'
    )
    root = write(tmp_path / "moltbot.json5", '{"$include": ["a.json5", "b.json5"]}')
    gateway = _load(root).gateway
    assert gateway.port == 2000
    assert gateway.bind == "lan"
    assert gateway.trusted_proxies == ("10.0.0.1", "10.0.0.2")


def test_sibling_keys_merge_over_the_included_object(tmp_path: Path) -> None:
    write(
        tmp_path / "base.json5",
        '{gateway: {port: 1000, bind: "lan", trustedProxies: ["10.0.0.1"]}}',
    )
    text = '{"$include": "base.json5", gateway: {port: 3000, trustedProxies: ["10.0.0.3"]}}'
    gateway = _load(write(tmp_path / "moltbot.json5", text)).gateway
    assert gateway.port == 3000
    assert gateway.bind == "lan"
    assert gateway.trusted_proxies == ("10.0.0.1", "10.0.0.3")


def test_nested_includes_are_relative_to_the_including_file(tmp_path: Path) -> None:
    write(tmp_path / "parts" / "gateway.json5", '{"$include": "deeper/port.json5", bind: "lan"}')
    write(tmp_path / "parts" / "deeper" / "port.json5", "{port: 4000}")
    root = write(tmp_path / "moltbot.json5", '{gateway: {"$include": "parts/gateway.json5"}}')
    gateway = _load(root).gateway
    assert (gateway.port, gateway.bind) == (4000, "lan")


def test_absolute_include_path(tmp_path: Path) -> None:
    other = write(tmp_path / "other" / "log.json5", '{level: "warn"}')
    root = write(tmp_path / "conf" / "moltbot.json5", f'{{logging: {{"$include": "{other}"}}}}')
    assert _load(root).logging.level == "warn"


def test_included_files_are_substituted_too(tmp_path: Path) -> None:
    write(tmp_path / "auth.json5", '{token: "${MY_TOKEN}"}')
    root = write(tmp_path / "moltbot.json5", '{gateway: {auth: {"$include": "auth.json5"}}}')
    assert _load(root, {"MY_TOKEN": "abc"}).gateway.auth.token == "abc"


def test_include_cycle_reports_the_chain(tmp_path: Path) -> None:
    write(tmp_path / "a.json5", '{"$include": "b.json5"}')
    write(tmp_path / "b.json5", '{"$include": "a.json5"}')
    root = write(tmp_path / "moltbot.json5", '{gateway: {"$include": "a.json5"}}')
    message = str(_error(root))
    assert "include cycle: moltbot.json5 -> a.json5 -> b.json5 -> a.json5" in message


def test_self_include_is_a_cycle(tmp_path: Path) -> None:
    root = write(tmp_path / "moltbot.json5", '{"$include": "moltbot.json5"}')
    assert "include cycle: moltbot.json5 -> moltbot.json5" in str(_error(root))


def _chain(tmp_path: Path, length: int) -> Path:
    """moltbot.json5 includes f1, f1 includes f2, ... f<length> holds the gateway."""
    for index in range(1, length):
        write(tmp_path / f"f{index}.json5", f'{{"$include": "f{index + 1}.json5"}}')
    write(tmp_path / f"f{length}.json5", "{gateway: {port: 6000}}")
    return write(tmp_path / "moltbot.json5", '{"$include": "f1.json5"}')


def test_ten_levels_of_includes_are_allowed(tmp_path: Path) -> None:
    assert _load(_chain(tmp_path, 10)).gateway.port == 6000


def test_eleven_levels_of_includes_are_too_deep(tmp_path: Path) -> None:
    message = str(_error(_chain(tmp_path, 11)))
    assert "nested deeper than 10 levels" in message
    assert "f10.json5 -> f11.json5" in message


def test_missing_include_names_file_and_location(tmp_path: Path) -> None:
    root = write(tmp_path / "moltbot.json5", '{models: {"$include": "providers.json5"}}')
    message = str(_error(root))
    assert "at models.$include" in message
    assert "cannot read providers.json5: file not found" in message


def test_non_string_item_in_include_list(tmp_path: Path) -> None:
    write(tmp_path / "a.json5", "{}")
    root = write(tmp_path / "moltbot.json5", '{"$include": ["a.json5", 3]}')
    message = str(_error(root))
    assert "$include[1]" in message
    assert "expected a file path (string), got integer" in message


def test_include_value_of_wrong_type(tmp_path: Path) -> None:
    root = write(tmp_path / "moltbot.json5", '{gateway: {"$include": {a: 1}}}')
    message = str(_error(root))
    assert "gateway.$include" in message
    assert "got object" in message


def test_siblings_next_to_a_non_object_include(tmp_path: Path) -> None:
    write(tmp_path / "list.json5", "[1]")
    root = write(tmp_path / "moltbot.json5", '{gateway: {"$include": "list.json5", port: 1}}')
    assert "need an included object, got array" in str(_error(root))


def test_parse_error_in_included_file_names_that_file(tmp_path: Path) -> None:
    write(tmp_path / "broken.json5", "{port: }")
    root = write(tmp_path / "moltbot.json5", '{gateway: {"$include": "broken.json5"}}')
    error = _error(root)
    assert "parse error in broken.json5" in str(error)
    assert error.path == root
