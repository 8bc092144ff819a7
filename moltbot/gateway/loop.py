"""Which asyncio event loop the gateway runs on: uvloop where it is installed (it does the
loop's job faster than asyncio's own), unless `gateway.eventLoop` says otherwise."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from moltbot.config.model import EventLoop

T = TypeVar("T")
LoopFactory = Callable[[], asyncio.AbstractEventLoop]


class EventLoopUnavailable(Exception):
    """`gateway.eventLoop` asks for a loop this installation does not have."""


def loop_factory(choice: EventLoop) -> tuple[str, LoopFactory | None]:
    """The loop's name and a factory for it (None: asyncio's default)."""
    if choice == "asyncio":
        return "asyncio", None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise EventLoopUnavailable(
                'gateway.eventLoop is "uvloop" but uvloop is not installed here; '
                'install it or set gateway.eventLoop to "auto" or "asyncio"'
            ) from None
        return "asyncio", None
    return "uvloop", uvloop.new_event_loop


def run(main: Callable[[str], Coroutine[Any, Any, T]], choice: EventLoop) -> T:
    """Run `main(loop_name)` to completion on the chosen loop."""
    name, factory = loop_factory(choice)
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main(name))
