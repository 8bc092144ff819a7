"""Fitting a method's result into one frame of at most `maxPayload` bytes.

Listings grow with what is stored (many sessions, long messages), and what is stored comes from
clients, so every listing is cut to the room its frame has left: whole items are dropped, the
least useful first. (Error answers, which may quote the request, are cut by the connection.)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def encoded_size(value: Any) -> int:
    """Bytes of `value` as `protocol.encode` writes it (compact UTF-8 JSON; \\u escapes when
    it holds a lone surrogate)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    try:
        return len(text.encode())
    except UnicodeEncodeError:
        return len(json.dumps(value, separators=(",", ":")))


def keep_first(items: Sequence[T], room: int) -> list[T]:
    """The longest prefix of `items` that fits in `room` bytes as a JSON array."""
    return list(items[: _fitting(items, room)])


def keep_last(items: Sequence[T], room: int) -> list[T]:
    """The longest suffix of `items` that fits in `room` bytes as a JSON array."""
    count = _fitting(items[::-1], room)
    return list(items[len(items) - count :])


def fit_text(text: str, room: int) -> str:
    """A prefix of `text` whose JSON string (quotes included) fits in `room` bytes, about the
    longest one when the text is alike throughout."""
    size = encoded_size(text)
    if size <= room:
        return text
    text = text[: len(text) * max(0, room) // size]
    # Every character takes at least one byte: dropping as many characters as there are bytes
    # too many always fits.
    while text and (over := encoded_size(text) - room) > 0:
        text = text[: max(0, len(text) - over)]
    return text


def shrink(document: Any, lists: Sequence[list[Any]], room: int) -> None:
    """Drop items from the end of each of `lists` (parts of `document`), the first list first,
    until `document` fits in `room` bytes or nothing is left to drop."""
    excess = encoded_size(document) - room
    for items in lists:
        while items and excess > 0:
            excess -= encoded_size(items.pop()) + 1  # the item and its comma
            if excess <= 0:  # measure again: the commas were estimated
                excess = encoded_size(document) - room


def _fitting(items: Sequence[Any], room: int) -> int:
    """How many leading items fit in `room` bytes as a JSON array."""
    if encoded_size(list(items)) <= room:  # the usual case: one measurement
        return len(items)
    used = 2  # the brackets
    for count, item in enumerate(items):
        used += encoded_size(item) + (1 if count else 0)
        if used > room:
            return count
    return len(items)
