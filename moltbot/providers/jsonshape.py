"""Tolerant reads from upstream JSON: a missing or mistyped field reads as empty, not a crash.

Upstreams (and the many servers imitating them) differ in which optional fields they send and
send `null` freely; the decoders only need "the value if it has the expected type".
"""

from __future__ import annotations


def obj(value: object) -> dict[str, object]:
    return value if isinstance(value, dict) else {}


def first(value: object) -> dict[str, object]:
    """The first element of a JSON array, as an object."""
    return obj(value[0]) if isinstance(value, list) and value else {}


def integer(value: object) -> int:
    # bool is an int subclass but never a token count.
    return max(0, value) if isinstance(value, int) and not isinstance(value, bool) else 0


def text(value: object) -> str:
    return value if isinstance(value, str) else ""
