"""Where the state directory and the config file live.

Every function takes the environment and the home directory as arguments so tests (and the CLI's
`--profile`-style tricks) never depend on the real process environment or home.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

STATE_DIR_VARS = ("MOLTBOT_STATE_DIR", "CLAWDBOT_STATE_DIR")
CONFIG_PATH_VARS = ("MOLTBOT_CONFIG_PATH", "CLAWDBOT_CONFIG_PATH")
CONFIG_FILE_NAME = "moltbot.json"
LEGACY_DIR_NAME = ".clawdbot"
LEGACY_FILE_NAME = "clawdbot.json"


def first_env(env: Mapping[str, str], names: tuple[str, ...]) -> tuple[str, str] | None:
    """The first of `names` set to a non-blank value, as (name, value); blank counts as unset."""
    for name in names:
        value = env.get(name, "").strip()
        if value:
            return name, value
    return None


def expand_path(raw: str, *, home: Path, base: Path | None = None) -> Path:
    """`~` expanded against `home`; a relative result is anchored at `base` (default: cwd)."""
    if raw == "~" or raw.startswith("~/"):
        path = home / raw[2:]
    else:
        path = Path(raw).expanduser()  # `~user` forms, or no tilde at all
    if not path.is_absolute():
        path = (base or Path.cwd()) / path
    return path.absolute()


def resolve_state_dir(env: Mapping[str, str], home: Path | None = None) -> Path:
    """`MOLTBOT_STATE_DIR` > `CLAWDBOT_STATE_DIR` > `~/.moltbot`, always absolute."""
    home = home or Path.home()
    override = first_env(env, STATE_DIR_VARS)
    if override is not None:
        return expand_path(override[1], home=home)
    return expand_path("~/.moltbot", home=home)


def resolve_config_path(
    cli_path: str | Path | None, env: Mapping[str, str], home: Path | None = None
) -> tuple[Path, str | None]:
    """The config file to read and, when worth logging, a notice about the choice.

    `--config` > `MOLTBOT_CONFIG_PATH` > `CLAWDBOT_CONFIG_PATH` > `<stateDir>/moltbot.json`, with
    a fallback to the legacy `~/.clawdbot/clawdbot.json` for users who have not migrated yet.
    """
    home = home or Path.home()
    if cli_path is not None:
        return expand_path(str(cli_path), home=home), None
    from_env = first_env(env, CONFIG_PATH_VARS)
    if from_env is not None:
        return expand_path(from_env[1], home=home), None
    return _default_config_path(env, home)


def _default_config_path(env: Mapping[str, str], home: Path) -> tuple[Path, str | None]:
    default = resolve_state_dir(env, home) / CONFIG_FILE_NAME
    legacy = home / LEGACY_DIR_NAME / LEGACY_FILE_NAME
    # An explicit state dir means the user chose a location; never reach back to the old one.
    if default.exists() or first_env(env, STATE_DIR_VARS) is not None or not legacy.is_file():
        return default, None
    return legacy, f"using legacy config {legacy} (move it to {default} to silence this)"
