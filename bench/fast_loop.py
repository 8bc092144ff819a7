"""The bench's own processes (load generator, fake upstream) run on uvloop where it is installed,
as the gateway does: on two cores, every bit of CPU they spend is taken from what is measured."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from moltbot.gateway.loop import loop_factory

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    _, factory = loop_factory("auto")
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
