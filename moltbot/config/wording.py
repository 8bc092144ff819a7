"""How config locations and values are written in messages, shared by every stage."""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable

MAX_SHOWN_CHARS = 60
ROOT = "<root>"


def join_key(path: str, key: object) -> str:
    """`gateway` + `port` -> `gateway.port`; the root path is the empty string."""
    return f"{path}.{key}" if path else str(key)


def join_index(path: str, index: int) -> str:
    return f"{path}[{index}]"


def shown_path(path: str) -> str:
    return path or ROOT


def type_name(value: object) -> str:
    """The JSON name of a value's type, as users see it in the file."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else type(value).__name__


def describe(value: object, *, secret: bool = False) -> str:
    """`integer 5`, `string "abc"`, `array` ...; a secret shows its type only."""
    kind = type_name(value)
    if secret or isinstance(value, list | dict) or value is None:
        return kind
    return f"{kind} {quote(value)}"


def quote(value: object) -> str:
    """A value as it would be written in the file, cut short if long."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= MAX_SHOWN_CHARS else text[: MAX_SHOWN_CHARS - 4] + '..."'


def one_of(choices: Iterable[str]) -> str:
    """`"a", "b" or "c"`."""
    quoted = [quote(choice) for choice in choices]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The known word `word` was probably meant to be, if any is close enough."""
    by_lower = {choice.lower(): choice for choice in choices}
    matches = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.7)
    return by_lower[matches[0]] if matches else None
