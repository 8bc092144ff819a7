"""Loading the gateway config: file, `$include`, env, validation and CLI overrides in one call.

    loaded = load_config(config_path=args.config, port=args.port, bind=args.bind)
    for notice in loaded.notices:
        log.info(notice)
    config = loaded.config

Everything raises `ConfigError`; its message is ready to print and never contains a secret.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from moltbot.config.agents import normalize_agent_id
from moltbot.config.errors import ConfigError
from moltbot.config.loader import load_raw
from moltbot.config.model import Config
from moltbot.config.overrides import apply_overrides
from moltbot.config.paths import resolve_config_path, resolve_state_dir
from moltbot.config.redact import redacted
from moltbot.config.starter import starter_config, write_new_config
from moltbot.config.validate import validate_config

__all__ = [
    "Config",
    "ConfigError",
    "LoadedConfig",
    "load_config",
    "normalize_agent_id",
    "redacted",
    "resolve_config_path",
    "resolve_state_dir",
    "starter_config",
    "write_new_config",
]


@dataclass(frozen=True)
class LoadedConfig:
    config: Config
    # The caller's environment plus the file's `env` block; the CLI may export it.
    env: dict[str, str]
    # Facts worth logging (legacy file used, no file found, normalised agent ids, ...).
    notices: tuple[str, ...]


def load_config(
    *,
    config_path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    port: int | None = None,
    bind: str | None = None,
    workers: int | None = None,
    home: Path | None = None,
) -> LoadedConfig:
    """Resolve, read, include, substitute, validate and apply env/CLI overrides.

    `config_path` is `--config` (a missing file is then an error), `port`/`bind`/`workers` are
    `--port`/`--bind`/`--workers`; `env` defaults to `os.environ` and is never modified.
    """
    env = dict(os.environ if env is None else env)
    home = home or Path.home()
    path, path_notice = resolve_config_path(config_path, env, home)
    raw = load_raw(path, explicit=config_path is not None, env=env)
    validated = validate_config(raw.data, base_dir=path.parent, home=home, source=path)
    auth_mode_set = _auth_mode_in_file(raw.data)
    config = apply_overrides(
        validated.config,
        raw.env,
        auth_mode_set=auth_mode_set,
        port=port,
        bind=bind,
        workers=workers,
        source=path,
    )
    config = replace(
        config, state_dir=resolve_state_dir(env, home), config_path=path, config_files=raw.files
    )
    notices = (*_file_notices(path, path_notice), *validated.notices)
    return LoadedConfig(config=config, env=raw.env, notices=notices)


def _auth_mode_in_file(raw: object) -> bool:
    """Whether the file chose an auth mode (the typed config cannot tell "unset" apart)."""
    gateway = raw.get("gateway") if isinstance(raw, dict) else None
    auth = gateway.get("auth") if isinstance(gateway, dict) else None
    return isinstance(auth, dict) and "mode" in auth


def _file_notices(path: Path, path_notice: str | None) -> list[str]:
    notices = [path_notice] if path_notice else []
    if not path.exists():
        notices.append(f"no config file at {path}; using defaults")
    return notices
