"""File modes for what holds secrets and conversations.

The state directory and the session database are the gateway's own: whatever mode an earlier
version or a hand-made copy left them with, group and other permissions are removed at start-up
(and said so in the log). A config file is the user's: it is never changed, but one holding a
secret that others can read gets a warning naming the file and the fix.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from urllib.parse import unquote, urlsplit

from moltbot.config.model import Config
from moltbot.config.redact import SECRET_NAME
from moltbot.logs import get_logger

log = get_logger("moltbot.files")

GROUP_AND_OTHERS = 0o077
# The files SQLite keeps next to a database; each holds pages of it.
DATABASE_SUFFIXES = ("", "-wal", "-shm", "-journal")
# Shorter configured values are not looked for in files: they would match by chance.
MIN_SECRET_CHARS = 6


def make_private(path: Path) -> bool:
    """Remove group and other permissions from `path` if it exists; True if it had any."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return False
    if not mode & GROUP_AND_OTHERS:
        return False
    private = mode & ~GROUP_AND_OTHERS
    try:
        os.chmod(path, private)
    except OSError as exc:
        log.warning(
            "cannot restrict permissions", path=str(path), mode=f"{mode:04o}", error=exc.strerror
        )
        return True
    log.warning(
        "restricted permissions: group and others had access",
        path=str(path),
        was=f"{mode:04o}",
        now=f"{private:04o}",
    )
    return True


def make_database_private(path: Path) -> None:
    """The database and its -wal/-shm/-journal files: SQLite creates the others with the
    database's mode, so a private database keeps the new ones private too."""
    for suffix in DATABASE_SUFFIXES:
        make_private(path.with_name(path.name + suffix))


def check_state_files(config: Config) -> list[str]:
    """At start-up: the state directory made private, then a warning for each config file
    that holds one of the config's secrets and that the group or others can read (checked
    after, since a config inside the private state directory is no longer reachable)."""
    make_private(config.state_dir)
    secrets = config_secrets(config)
    warnings = []
    for path in config.config_files:
        who = readable_by(path)
        text = _text(path) if who and secrets else ""
        held = dict.fromkeys(what for what, value in secrets if value in text)
        if held:
            warnings.append(
                f"{path} holds {', '.join(held)} and is readable by {who}: run "
                f"`chmod 600 {path}`, or move the secret to an environment variable "
                "(`${VAR}` in the config)"
            )
    for warning in warnings:
        log.warning(warning)
    return warnings


def config_secrets(config: Config) -> list[tuple[str, str]]:
    """(what it is, value) for every secret the config holds."""
    auth = config.gateway.auth
    found = [("the gateway token", auth.token), ("the gateway password", auth.password)]
    for provider in config.models.providers:
        found.append((f"the API key of provider {provider.name}", provider.api_key))
        found += [
            (f"header {name} of provider {provider.name}", value)
            for name, value in provider.headers
            if SECRET_NAME.search(name)
        ]
    if config.session.postgres is not None:
        found.append(("the session store's password", dsn_password(config.session.postgres.dsn)))
    return [(what, value) for what, value in found if value and len(value) >= MIN_SECRET_CHARS]


def dsn_password(dsn: str) -> str | None:
    """The password in a postgres:// URL (user:password@host, or ?password=)."""
    parts = urlsplit(dsn)
    if parts.password:
        return unquote(parts.password)
    for item in parts.query.split("&"):
        name, _, value = item.partition("=")
        if name.lower() == "password" and value:
            return unquote(value)
    return None


def readable_by(path: Path) -> str | None:
    """ "the group", "others", "the group and others", or None: who can read `path`, given its
    mode and the search permission of the directories above it."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    group, others = bool(mode & stat.S_IRGRP), bool(mode & stat.S_IROTH)
    for directory in path.resolve().parents:
        try:
            dir_mode = directory.stat().st_mode
        except OSError:
            return None
        group = group and bool(dir_mode & stat.S_IXGRP)
        others = others and bool(dir_mode & stat.S_IXOTH)
    names = [name for name, can in (("the group", group), ("others", others)) if can]
    return " and ".join(names) or None


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
