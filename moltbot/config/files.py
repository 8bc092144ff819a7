"""Reading one config file from disk into plain Python values (JSON5, or YAML by extension)."""

from __future__ import annotations

import re
from pathlib import Path

import json5
import yaml

from moltbot.config.errors import ConfigError

YAML_SUFFIXES = (".yaml", ".yml")
# json5 reports e.g. `<string>:3 Unexpected "b" at column 2`; we reword it with the file name.
_JSON5_POSITION = re.compile(r"^<string>:(?P<line>\d+) (?P<what>.*) at column (?P<column>\d+)$")


def read_config_file(path: Path, *, shown_as: str, report_as: Path) -> object:
    """Parse the file at `path`; errors name it as `shown_as` and are raised against `report_as`
    (the top-level config, so the user knows which load failed)."""
    text = _read_text(path, shown_as=shown_as, report_as=report_as)
    if path.suffix.lower() in YAML_SUFFIXES:
        return _parse_yaml(text, shown_as=shown_as, report_as=report_as)
    return _parse_json5(text, shown_as=shown_as, report_as=report_as)


def _read_text(path: Path, *, shown_as: str, report_as: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError.file_level(report_as, f"cannot read {shown_as}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError.file_level(report_as, f"cannot read {shown_as}: {reason}") from None


def _parse_json5(text: str, *, shown_as: str, report_as: Path) -> object:
    try:
        return json5.loads(text)
    except ValueError as exc:
        match = _JSON5_POSITION.match(str(exc))
        detail = str(exc)
        if match:
            detail = f"{match['what']} at line {match['line']}, column {match['column']}"
        raise ConfigError.file_level(report_as, f"parse error in {shown_as}: {detail}") from None
    except RecursionError:
        raise ConfigError.file_level(
            report_as, f"parse error in {shown_as}: nested too deeply"
        ) from None


def _parse_yaml(text: str, *, shown_as: str, report_as: Path) -> object:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        # Only the problem and its position: the YAML snippet could quote a secret line.
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or "invalid YAML"
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        detail = f"parse error in {shown_as}: {problem}{where}"
        raise ConfigError.file_level(report_as, detail) from None
    except RecursionError:
        raise ConfigError.file_level(
            report_as, f"parse error in {shown_as}: nested too deeply"
        ) from None
