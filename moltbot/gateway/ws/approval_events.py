"""`exec.approval.requested` / `exec.approval.resolved`: sent to every operator socket that
may answer approvals (scope `operator.approvals` or `operator.admin`), whoever started the run.

The hub owns one relay; it listens to the runtime's approvals (moltbot.tools.approvals) from
start to close. The events are small and few (at most one pending approval per running
command), and none may be dropped: a socket too slow for them is closed like any slow consumer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from moltbot.gateway.ws.connection import Connection
from moltbot.logs import get_logger
from moltbot.tools.approvals import Approvals

log = get_logger("moltbot.ws")


class ApprovalRelay:
    def __init__(self) -> None:
        self._watchers: set[Connection] = set()
        self._unsubscribe: Callable[[], None] | None = None

    def attach(self, approvals: Approvals) -> None:
        self._unsubscribe = approvals.subscribe(self._send)

    def detach(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def watch(self, conn: Connection) -> None:
        self._watchers.add(conn)

    def unwatch(self, conn: Connection) -> None:
        self._watchers.discard(conn)

    def _send(self, name: str, payload: dict[str, Any]) -> None:
        for conn in tuple(self._watchers):
            try:
                conn.send_event(name, payload)
            except Exception:
                log.exception("could not queue an approval event", conn=conn.id, name=name)
