"""Who gets which run's events: subscriptions of connections, by run id and by session key.

Three kinds:
- `run`: `agent` events of one run (the connection that started it, or `agent.follow {runId}`);
  dropped when the run ends.
- `session`: `agent` events of every run on a session (`agent.follow {sessionKey}`).
- `chat`: `chat` events of a session (implicit on `chat.send` / `chat.history`).

Each connection holds at most MAX_SUBSCRIPTIONS; past that its oldest one is dropped, so a
client cannot grow these maps without bound.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Set
from typing import Literal

from moltbot.gateway.ws.connection import Connection

Kind = Literal["run", "session", "chat"]
MAX_SUBSCRIPTIONS = 1024
_NOBODY: frozenset[Connection] = frozenset()


class Routes:
    def __init__(self, max_per_connection: int = MAX_SUBSCRIPTIONS) -> None:
        self._max = max_per_connection
        self._targets: dict[tuple[Kind, str], set[Connection]] = {}
        self._by_conn: dict[Connection, OrderedDict[tuple[Kind, str], None]] = {}

    def add(self, conn: Connection, kind: Kind, key: str) -> None:
        mine = self._by_conn.setdefault(conn, OrderedDict())
        route = (kind, key)
        mine[route] = None
        mine.move_to_end(route)
        self._targets.setdefault(route, set()).add(conn)
        while len(mine) > self._max:
            oldest, _ = mine.popitem(last=False)
            self._unlink(conn, oldest)

    def remove(self, conn: Connection, kind: Kind, key: str) -> bool:
        mine = self._by_conn.get(conn)
        if mine is None or (kind, key) not in mine:
            return False
        del mine[(kind, key)]
        self._unlink(conn, (kind, key))
        return True

    def targets(self, kind: Kind, key: str) -> Set[Connection]:
        """The live set (copy it before a loop that may change routes); empty: no allocation."""
        return self._targets.get((kind, key), _NOBODY)

    def keys(self, kind: Kind) -> list[str]:
        """Every key that some connection follows as `kind`."""
        return [key for route_kind, key in self._targets if route_kind == kind]

    def forget(self, kind: Kind, key: str) -> None:
        """Drop a route for everyone (a run that ended)."""
        for conn in self._targets.pop((kind, key), set()):
            mine = self._by_conn.get(conn)
            if mine is not None:
                mine.pop((kind, key), None)

    def drop_connection(self, conn: Connection) -> None:
        for route in self._by_conn.pop(conn, {}):
            self._unlink(conn, route)

    def _unlink(self, conn: Connection, route: tuple[Kind, str]) -> None:
        conns = self._targets.get(route)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del self._targets[route]
