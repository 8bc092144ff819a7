"""The one exception every config problem is reported through.

It lives in its own module so the loader, the validator and the public API can all raise it
without importing each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class ConfigError(Exception):
    """A config that cannot be used.

    `path` is the config file concerned (None when no file is involved) and `problems` holds one
    line per issue, `<dotted.path or <root>>: <message>`, so callers can show or test them one by
    one. Messages never contain secret values.
    """

    def __init__(
        self, message: str, *, path: Path | None = None, problems: Sequence[str] = ()
    ) -> None:
        super().__init__(message)
        self.path = path
        self.problems = list(problems) or [message]

    @classmethod
    def invalid(cls, path: Path | None, problems: Sequence[str]) -> ConfigError:
        """Several problems found while checking the content; all are reported at once."""
        lines = [f"Invalid config at {_where(path)}:", *(f"  {line}" for line in problems)]
        return cls("\n".join(lines), path=path, problems=problems)

    @classmethod
    def file_level(cls, path: Path | None, detail: str) -> ConfigError:
        """A problem with the file as a whole (unreadable, unparsable, include cycle, ...)."""
        return cls(f"Invalid config at {_where(path)}: {detail}", path=path, problems=[detail])


def _where(path: Path | None) -> str:
    return str(path) if path is not None else "<no file>"
