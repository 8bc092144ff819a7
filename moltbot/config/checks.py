"""Small typed readers for validating the raw config tree.

Each checker takes `(value, path, ctx)` and returns the checked value, or None after recording a
problem in `ctx`; validation keeps going so every problem in the file is reported in one go.
`Node` wraps one JSON object and offers the same checks keyed by field name.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from moltbot.config.paths import expand_path
from moltbot.config.wording import (
    closest,
    describe,
    join_index,
    join_key,
    one_of,
    quote,
    shown_path,
)
from moltbot.net.policy import FetchPolicy

T = TypeVar("T")
Checker = Callable[[object, str, "Context"], T | None]


@dataclass
class Context:
    """Where problems and notices are collected, and how relative paths are anchored."""

    base_dir: Path
    home: Path
    problems: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)

    def problem(self, path: str, message: str) -> None:
        self.problems.append(f"{shown_path(path)}: {message}")

    def mismatch(self, path: str, expected: str, value: object, *, secret: bool = False) -> None:
        self.problem(path, f"expected {expected}, got {describe(value, secret=secret)}")


def given(**fields: object) -> dict[str, object]:
    """The fields that were set, so the dataclass defaults apply to the rest."""
    return {name: value for name, value in fields.items() if value is not None}


def as_string(value: object, path: str, ctx: Context, *, secret: bool = False) -> str | None:
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, str):
        ctx.problem(path, "expected a non-empty string, got a blank string")
    else:
        ctx.mismatch(path, "a non-empty string", value, secret=secret)
    return None


def as_bool(value: object, path: str, ctx: Context) -> bool | None:
    if isinstance(value, bool):
        return value
    ctx.mismatch(path, "true or false", value)
    return None


def as_int(
    value: object, path: str, ctx: Context, *, minimum: int = 1, maximum: int | None = None
) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        if value >= minimum and (maximum is None or value <= maximum):
            return value
    ctx.mismatch(path, _int_range(minimum, maximum), value)
    return None


def as_number(value: object, path: str, ctx: Context, *, minimum: float = 0) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        if math.isfinite(value) and value >= minimum:
            return float(value)
    ctx.mismatch(path, f"a number >= {minimum:g}", value)
    return None


def as_choice(value: object, path: str, ctx: Context, choices: Collection[str]) -> str | None:
    if isinstance(value, str) and value in choices:
        return value
    got = quote(value) if isinstance(value, str) else describe(value)
    message = f"expected {one_of(choices)}, got {got}"
    suggestion = closest(value, choices) if isinstance(value, str) else None
    ctx.problem(path, f'{message} (did you mean "{suggestion}"?)' if suggestion else message)
    return None


def as_url(value: object, path: str, ctx: Context) -> str | None:
    text = as_string(value, path, ctx)
    if text is None:
        return None
    parts = urlsplit(text.strip())
    if parts.scheme in ("http", "https") and parts.netloc:
        return text.strip()
    # A URL can carry credentials (user:pass@host); then only say what was wrong.
    ctx.mismatch(path, "an http:// or https:// URL", text, secret="@" in text)
    return None


def as_host_list(value: object, path: str, ctx: Context) -> tuple[str, ...] | None:
    """Host names, `*.domain` wildcards, IPs or CIDR networks, checked by the fetcher's own
    parser (one set of rules)."""
    hosts = as_tuple(value, path, ctx, as_string)
    if hosts is None:
        return None
    try:
        FetchPolicy(max_bytes=1, timeout_seconds=1, allowed_hosts=hosts)
    except ValueError as exc:
        ctx.problem(path, str(exc))
        return None
    return hosts


def as_path(value: object, path: str, ctx: Context) -> Path | None:
    """`~` expanded; relative paths are relative to the config file's directory."""
    text = as_string(value, path, ctx)
    return expand_path(text, home=ctx.home, base=ctx.base_dir) if text else None


def as_list(value: object, path: str, ctx: Context, item: Checker[T]) -> list[tuple[str, T]] | None:
    """Each good item with its own path (for later cross-item checks such as duplicates)."""
    if not isinstance(value, list):
        ctx.mismatch(path, "an array", value)
        return None
    paths = [join_index(path, index) for index in range(len(value))]
    checked = [(where, item(entry, where, ctx)) for where, entry in zip(paths, value, strict=True)]
    return [(where, result) for where, result in checked if result is not None]


def report_duplicates(items: list[tuple[str, str]], what: str, ctx: Context) -> None:
    """For (item path, item id) pairs: each repeated id is a problem that names the first use."""
    first_seen: dict[str, str] = {}
    for path, item_id in items:
        if item_id in first_seen:
            message = f"duplicate {what} {quote(item_id)} (also {first_seen[item_id]})"
            ctx.problem(join_key(path, "id"), message)
        first_seen.setdefault(item_id, path)


def as_tuple(value: object, path: str, ctx: Context, item: Checker[T]) -> tuple[T, ...] | None:
    items = as_list(value, path, ctx, item)
    return None if items is None else tuple(result for _, result in items)


def as_node(value: object, path: str, ctx: Context) -> Node | None:
    if isinstance(value, dict):
        return Node(value, path, ctx)
    ctx.mismatch(path, "an object", value)
    return None


def objects(build: Callable[[Node], T | None]) -> Checker[T]:
    """A checker for values that must be objects, built by `build`."""

    def check(value: object, path: str, ctx: Context) -> T | None:
        node = as_node(value, path, ctx)
        return build(node) if node is not None else None

    return check


@dataclass(frozen=True)
class Node:
    """One object of the config file, its dotted path, and the shared context."""

    data: Mapping[object, object]
    path: str
    ctx: Context

    def at(self, key: object) -> str:
        return join_key(self.path, key)

    def check_keys(self, allowed: Collection[str], moved: Mapping[str, str] | None = None) -> None:
        """Strictness: every key not in `allowed` is a problem, with a hint where we have one."""
        for key in self.data:
            if key not in allowed:
                self.ctx.problem(self.at(key), _unknown_key(str(key), allowed, moved or {}))

    def get(self, key: str, check: Checker[T], *, required: bool = False) -> T | None:
        """`check` applied to the value at `key`; an absent key is None (or a problem)."""
        if key in self.data:
            return check(self.data[key], self.at(key), self.ctx)
        if required:
            self.ctx.problem(self.at(key), "required key is missing")
        return None

    def string(self, key: str, *, required: bool = False, secret: bool = False) -> str | None:
        def check(value: object, path: str, ctx: Context) -> str | None:
            return as_string(value, path, ctx, secret=secret)

        return self.get(key, check, required=required)

    def boolean(self, key: str) -> bool | None:
        return self.get(key, as_bool)

    def integer(self, key: str, *, minimum: int = 1, maximum: int | None = None) -> int | None:
        def check(value: object, path: str, ctx: Context) -> int | None:
            return as_int(value, path, ctx, minimum=minimum, maximum=maximum)

        return self.get(key, check)

    def choice(self, key: str, choices: Collection[str], *, required: bool = False) -> str | None:
        def check(value: object, path: str, ctx: Context) -> str | None:
            return as_choice(value, path, ctx, choices)

        return self.get(key, check, required=required)

    def section(self, key: str, build: Callable[[Node], T]) -> T | None:
        """A nested object built by `build`, or None when absent or not an object."""
        return self.get(key, objects(build))


def _int_range(minimum: int, maximum: int | None) -> str:
    if maximum is not None:
        return f"an integer from {minimum} to {maximum}"
    return "a positive integer" if minimum == 1 else f"an integer >= {minimum}"


def _unknown_key(key: str, allowed: Collection[str], moved: Mapping[str, str]) -> str:
    if key in moved:
        return f"unknown key (use {moved[key]} instead)"
    suggestion = closest(key, allowed)
    if suggestion:
        return f'unknown key (did you mean "{suggestion}"?)'
    return f"unknown key (expected one of: {', '.join(sorted(allowed))})"
