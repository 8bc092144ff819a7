"""The raw half of loading: file -> includes -> `env` block -> `${VAR}` substitution.

What comes out is still an untyped tree; `validate.py` turns it into a `Config`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from moltbot.config.envsubst import apply_env_block, substitute_env
from moltbot.config.errors import ConfigError
from moltbot.config.files import read_config_file
from moltbot.config.includes import resolve_includes


@dataclass(frozen=True)
class RawConfig:
    # The parsed tree with includes expanded and variables substituted.
    data: object
    # The environment as the config sees it: the caller's env plus the file's `env` block.
    env: dict[str, str]
    # Every file read: the config file (if it exists), then its includes.
    files: tuple[Path, ...] = ()


def load_raw(path: Path, *, explicit: bool, env: Mapping[str, str]) -> RawConfig:
    """Read `path` and run the pre-validation stages. A missing file is an empty config unless
    the user named it explicitly (then a typo should not silently mean "all defaults")."""
    parsed = _read(path, explicit=explicit)
    files = [path] if path.exists() else []
    expanded = resolve_includes(parsed, file=path, read=files)
    merged_env = apply_env_block(expanded, env)
    substituted, problems = substitute_env(expanded, merged_env)
    if problems:
        raise ConfigError.invalid(path, problems)
    return RawConfig(data=substituted, env=merged_env, files=tuple(files))


def _read(path: Path, *, explicit: bool) -> object:
    if path.exists():
        return read_config_file(path, shown_as=path.name, report_as=path)
    if explicit:
        raise ConfigError(f"config file not found: {path}", path=path)
    return {}
