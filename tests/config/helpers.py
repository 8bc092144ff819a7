"""Shared helpers: write a config into tmp_path and load it with an explicit env and fake home."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from moltbot.config import ConfigError, LoadedConfig, load_config


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def load(
    tmp_path: Path,
    text: str,
    *,
    env: Mapping[str, str] | None = None,
    name: str = "moltbot.json5",
    **overrides: object,
) -> LoadedConfig:
    path = write(tmp_path / name, text)
    return load_config(config_path=path, env=dict(env or {}), home=tmp_path / "home", **overrides)


def load_error(tmp_path: Path, text: str, **kwargs: object) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, **kwargs)
    return info.value


def problem_at(error: ConfigError, path: str) -> str:
    """The one problem reported for `path` (without the `path: ` prefix)."""
    found = [line for line in error.problems if line.startswith(f"{path}: ")]
    assert len(found) == 1, f"expected one problem at {path}, got {error.problems}"
    return found[0][len(path) + 2 :]
