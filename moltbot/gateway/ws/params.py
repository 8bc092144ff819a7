"""Strict validation of method params, with the reference's error wording.

    p = Params(raw)
    key = p.string("sessionKey", required=True, min_length=1)
    limit = p.integer("limit", minimum=1, maximum=1000)
    p.finish("chat.history")  # raises INVALID_REQUEST naming every problem

Every problem is collected (not just the first), so one answer tells the client all that is
wrong: `invalid chat.history params: at /limit: must be >= 1; at root: unexpected property 'x'`.

Input that would break something later is refused here: integers outside JSON's safe range
(`10**400` cannot become a float or a SQLite integer) and strings with lone surrogates
(`"\\ud800"` has no UTF-8 form: it cannot be stored, logged or sent back).
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection
from typing import Any

from moltbot.agents.session_keys import MAX_SESSION_KEY_CHARS
from moltbot.gateway.ws.protocol import RpcError, invalid_request

_MISSING = object()
NOT_UNICODE = "must be valid Unicode (no lone surrogates)"
# The integers a JavaScript client can send exactly (Number.MAX_SAFE_INTEGER); also far
# inside what floats, timers and SQLite's 64-bit integers take.
MAX_SAFE_INTEGER = 2**53 - 1
_SURROGATE = re.compile("[\ud800-\udfff]")


def _integral(value: Any) -> bool:
    # JSON has one number type: 3.0 is the integer 3, as in the reference's validator.
    # Only floats can be infinite or NaN (math.isfinite would overflow on a huge int).
    if isinstance(value, float):
        return math.isfinite(value) and value.is_integer()
    return isinstance(value, int) and not isinstance(value, bool)


def has_lone_surrogate(text: str) -> bool:
    # JSON decoding joins valid pairs into one character: any surrogate left is a lone one.
    return not text.isascii() and _SURROGATE.search(text) is not None


def printable(text: str) -> str:
    """`text` with lone surrogates written as `\\udXXX`, safe to put in a message."""
    return text.encode("utf-8", "backslashreplace").decode()


class Params:
    """One JSON object read field by field; nested objects share the problem list."""

    def __init__(self, data: Any, path: str = "", problems: list[str] | None = None) -> None:
        self._path = path
        self._problems: list[str] = [] if problems is None else problems
        self._read: set[str] = set()
        self._children: list[Params] = []
        if not isinstance(data, dict):
            self._problem(None, "must be object")
            data = {}
        self._data: dict[str, Any] = data

    # -- readers ----------------------------------------------------------------------------

    def string(
        self,
        name: str,
        *,
        required: bool = False,
        min_length: int = 0,
        max_length: int | None = None,
    ) -> str | None:
        value = self._take(name, required)
        if value is None:
            return None
        if not isinstance(value, str):
            return self._wrong(name, "must be string")
        if has_lone_surrogate(value):
            return self._wrong(name, NOT_UNICODE)
        if len(value) < min_length:
            return self._wrong(name, f"must NOT have fewer than {min_length} characters")
        if max_length is not None and len(value) > max_length:
            return self._wrong(name, f"must NOT have more than {max_length} characters")
        return value

    def session_key(self, name: str = "sessionKey", *, required: bool = False) -> str | None:
        """A session key as a client names one: not empty, at most MAX_SESSION_KEY_CHARS."""
        return self.string(name, required=required, min_length=1, max_length=MAX_SESSION_KEY_CHARS)

    def integer(
        self,
        name: str,
        *,
        required: bool = False,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> int | None:
        """An integer within [minimum, maximum], and always within ±MAX_SAFE_INTEGER."""
        value = self._take(name, required)
        if value is None:
            return None
        if not _integral(value):
            return self._wrong(name, "must be integer")
        low = -MAX_SAFE_INTEGER if minimum is None else max(minimum, -MAX_SAFE_INTEGER)
        high = MAX_SAFE_INTEGER if maximum is None else min(maximum, MAX_SAFE_INTEGER)
        if value < low:
            return self._wrong(name, f"must be >= {low}")
        if value > high:
            return self._wrong(name, f"must be <= {high}")
        return int(value)

    def boolean(self, name: str, *, required: bool = False) -> bool | None:
        value = self._take(name, required)
        if value is None or isinstance(value, bool):
            return value
        return self._wrong(name, "must be boolean")

    def choice(self, name: str, options: Collection[str], *, required: bool = False) -> str | None:
        value = self._take(name, required)
        if value is None:
            return None
        if not isinstance(value, str):
            return self._wrong(name, "must be string")
        if value not in options:
            return self._wrong(name, "must be equal to one of the allowed values")
        return value

    def strings(
        self,
        name: str,
        *,
        required: bool = False,
        min_items: int = 0,
        max_length: int | None = None,
    ) -> list[str] | None:
        """A list of strings, each at most `max_length` characters."""
        value = self._take(name, required)
        if value is None:
            return None
        if not isinstance(value, list):
            return self._wrong(name, "must be array")
        if len(value) < min_items:
            return self._wrong(name, f"must NOT have fewer than {min_items} items")
        problems = len(self._problems)
        for index, item in enumerate(value):
            if not isinstance(item, str):
                self._problem(f"{name}/{index}", "must be string")
            elif has_lone_surrogate(item):
                self._problem(f"{name}/{index}", NOT_UNICODE)
            elif max_length is not None and len(item) > max_length:
                self._problem(f"{name}/{index}", f"must NOT have more than {max_length} characters")
        return None if len(self._problems) > problems else value

    def array(self, name: str) -> list[Any] | None:
        value = self._take(name, False)
        if value is None or isinstance(value, list):
            return value
        return self._wrong(name, "must be array")

    def bool_map(self, name: str) -> dict[str, bool] | None:
        value = self._take(name, False)
        if value is None:
            return None
        if not isinstance(value, dict):
            return self._wrong(name, "must be object")
        problems = len(self._problems)
        for key, item in value.items():
            if has_lone_surrogate(key):
                self._problem(f"{name}/{key}", NOT_UNICODE)
            elif not isinstance(item, bool):
                self._problem(f"{name}/{key}", "must be boolean")
        return None if len(self._problems) > problems else value

    def object(self, name: str, *, required: bool = False) -> Params | None:
        value = self._take(name, required)
        if value is None:
            return None
        if not isinstance(value, dict):
            return self._wrong(name, "must be object")
        child = Params(value, f"{self._path}/{name}", self._problems)
        self._children.append(child)
        return child

    def ignored(self, *names: str) -> None:
        """Fields the schema allows but this gateway does not act on."""
        self._read.update(names)

    # -- the verdict ------------------------------------------------------------------------

    @property
    def problems(self) -> list[str]:
        self._check_unexpected()
        return list(dict.fromkeys(self._problems))  # de-duplicated, first seen first

    def finish(self, method: str) -> None:
        """Raise INVALID_REQUEST `invalid <method> params: …` if anything was wrong."""
        problems = self.problems
        if problems:
            raise invalid_params(method, "; ".join(problems))

    # -- internals --------------------------------------------------------------------------

    def _take(self, name: str, required: bool) -> Any:
        self._read.add(name)
        value = self._data.get(name, _MISSING)
        if value is _MISSING:
            if required:
                self._problem(None, f"must have required property '{name}'")
            return None
        if value is None and required:
            self._problem(name, "must not be null")
        return value

    def _wrong(self, name: str, message: str) -> None:
        self._problem(name, message)
        return None

    def _problem(self, name: str | None, message: str) -> None:
        pointer = f"{self._path}/{name}" if name is not None else self._path
        # Names can be a client's (unexpected keys): they must not carry surrogates onward.
        self._problems.append(printable(f"at {pointer or 'root'}: {message}"))

    def _check_unexpected(self) -> None:
        for key in self._data:
            if key not in self._read:
                self._problem(None, f"unexpected property '{key}'")
        self._read.update(self._data)  # report once, however often `problems` is read
        for child in self._children:
            child._check_unexpected()


def invalid_params(method: str, details: str) -> RpcError:
    return invalid_request(f"invalid {method} params: {details}")
