"""Turning upstream failures into classified `ProviderError`s.

The messages built here are whole (an error body is read up to 64 KiB): the provider's
`Scrubber` masks its credentials in them and only then shortens them (moltbot/providers/scrub.py).
"""

from __future__ import annotations

import json
import time
from email.utils import parsedate_to_datetime

import aiohttp

from moltbot.providers.base import ErrorKind, ProviderError


def kind_for_status(status: int) -> ErrorKind:
    if status in (401, 403):
        return "auth"
    if status == 429:
        return "rate_limit"
    if status in (408, 504):
        return "timeout"
    return "upstream"  # 5xx stay retryable and other 4xx not, via ProviderError.retryable


def error_detail(body: str) -> str:
    """The human part of an error body: `error.message` (OpenAI and Anthropic shapes) or the
    raw text."""
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        parsed = None
    return message_in(parsed) or body.strip()


def message_in(parsed: object) -> str | None:
    """`error.message` (or a bare `error` string) of a parsed error document."""
    if not isinstance(parsed, dict):
        return None
    error = parsed.get("error", parsed)
    if isinstance(error, str):
        return error
    message = error.get("message") if isinstance(error, dict) else None
    return message if isinstance(message, str) else None


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After` is either delay-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def status_error(provider: str, status: int, body: str, retry_after: str | None) -> ProviderError:
    detail = error_detail(body) or "(empty body)"
    return ProviderError(
        kind_for_status(status),
        f"{provider}: HTTP {status}: {detail}",
        status=status,
        retry_after=parse_retry_after(retry_after),
    )


def transport_error(provider: str, exc: Exception) -> ProviderError:
    """Map an aiohttp/socket exception raised while talking to the upstream."""
    kind, what = _transport_kind(exc)
    detail = str(exc)
    cause = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    return ProviderError(kind, f"{provider}: {what}: {cause}")


def _transport_kind(exc: Exception) -> tuple[ErrorKind, str]:
    if isinstance(exc, aiohttp.InvalidURL):
        return "config", "invalid URL"
    # Checked before TimeoutError, which it also is: the request never reached the upstream.
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return "connection", "connect timed out"
    if isinstance(exc, TimeoutError):
        return "timeout", "timed out"
    return "connection", "connection failed"
