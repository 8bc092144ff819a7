"""The last load stage: environment variables and CLI flags layered over the validated file.

Precedence: `--port` > `MOLTBOT_GATEWAY_PORT` > `CLAWDBOT_GATEWAY_PORT` > file > default;
`--bind` > file; `--workers` > file; the file's auth token/password > `MOLTBOT_GATEWAY_*` >
`CLAWDBOT_GATEWAY_*`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from moltbot.config.errors import ConfigError
from moltbot.config.model import AuthConfig, Config
from moltbot.config.paths import first_env
from moltbot.config.validate import bind_error, workers_problem
from moltbot.config.wording import quote

PORT_VARS = ("MOLTBOT_GATEWAY_PORT", "CLAWDBOT_GATEWAY_PORT")
TOKEN_VARS = ("MOLTBOT_GATEWAY_TOKEN", "CLAWDBOT_GATEWAY_TOKEN")
PASSWORD_VARS = ("MOLTBOT_GATEWAY_PASSWORD", "CLAWDBOT_GATEWAY_PASSWORD")
MAX_PORT = 65535
_DIGITS = re.compile(r"[0-9]+")


def apply_overrides(
    config: Config,
    env: Mapping[str, str],
    *,
    auth_mode_set: bool,
    port: int | None,
    bind: str | None,
    source: Path | None,
    workers: int | None = None,
) -> Config:
    """`config` with env and CLI values applied; bad values are raised together."""
    problems: list[str] = []
    file_values = config.gateway
    gateway = replace(
        file_values,
        port=_port(port, env, file_values.port, problems),
        bind=_bind(bind, file_values.bind, problems),
        auth=_auth(file_values.auth, env, auth_mode_set=auth_mode_set),
        workers=file_values.workers if workers is None else workers,
    )
    if workers is not None and (problem := workers_problem(workers, config.session.backend)):
        problems.append(f"--workers: {problem}")
    if problems:
        raise ConfigError.invalid(source, problems)
    return replace(config, gateway=gateway)


def _port(cli_port: int | None, env: Mapping[str, str], current: int, problems: list[str]) -> int:
    expected = f"expected an integer port from 1 to {MAX_PORT}"
    if cli_port is not None:
        if isinstance(cli_port, bool) or not 1 <= cli_port <= MAX_PORT:
            problems.append(f"--port: {expected}, got {cli_port!r}")
        return cli_port
    from_env = first_env(env, PORT_VARS)
    if from_env is None:
        return current
    name, text = from_env
    if _DIGITS.fullmatch(text) and 1 <= int(text) <= MAX_PORT:
        return int(text)
    problems.append(f"{name}: {expected}, got {quote(text)}")
    return current


def _bind(cli_bind: str | None, current: str, problems: list[str]) -> str:
    if cli_bind is None:
        return current
    problem = bind_error(cli_bind)
    if problem:
        problems.append(f"--bind: {problem}")
    return cli_bind


def _auth(auth: AuthConfig, env: Mapping[str, str], *, auth_mode_set: bool) -> AuthConfig:
    """Secrets from the env fill gaps only; an unset mode follows whichever secret exists."""
    token = auth.token or _env_secret(env, TOKEN_VARS)
    password = auth.password or _env_secret(env, PASSWORD_VARS)
    mode = auth.mode if auth_mode_set else ("password" if password and not token else "token")
    return replace(auth, mode=mode, token=token, password=password)


def _env_secret(env: Mapping[str, str], names: tuple[str, ...]) -> str | None:
    found = first_env(env, names)
    return found[1] if found else None
