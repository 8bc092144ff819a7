"""Logging set-up: structlog, human-readable on a terminal, JSON lines otherwise (journald)."""

from __future__ import annotations

import hashlib
import logging
import sys
from typing import TextIO

import structlog

from moltbot.config.model import LogFormat, LogLevel

# Our level names (the reference's) mapped onto the stdlib's numbers.
LEVELS: dict[LogLevel, int] = {
    "silent": logging.CRITICAL + 10,
    "fatal": logging.CRITICAL,
    "error": logging.ERROR,
    "warn": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": logging.DEBUG,
}


def configure_logging(
    level: LogLevel = "info", fmt: LogFormat = "auto", stream: TextIO | None = None
) -> None:
    """Route structlog (and aiohttp's stdlib loggers) to one stream in one format."""
    out = stream or sys.stderr
    pretty = fmt == "pretty" or (fmt == "auto" and out.isatty())
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=False)
        if pretty
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        # One write per line (print would write the newline apart): worker processes share
        # the one stderr, and their lines must not interleave.
        logger_factory=structlog.WriteLoggerFactory(out),
        cache_logger_on_first_use=True,
    )
    # aiohttp's own loggers: keep their warnings, drop its access log (we write our own line).
    logging.basicConfig(stream=out, level=max(LEVELS[level], logging.WARNING), force=True)
    logging.getLogger("aiohttp.access").setLevel(logging.CRITICAL + 10)


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger(name)


def short_hash(value: str) -> str:
    """A stable, non-reversible tag for a session key: enough to correlate log lines."""
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:12]
