"""A bound on sockets that have not finished their handshake, in all and per client address.

aiohttp sets a socket's largest frame (maxPayload) when the socket is made; it cannot be lowered
for just the handshake. So an unauthenticated socket may make the gateway read a frame of up to
maxPayload before the smaller pre-auth limit can be checked, and what unauthenticated clients
can make the gateway hold is bounded by how many of them there may be at once.

At a cap the newcomer is not turned away: the oldest pending handshake (from the same address,
or in all) is evicted to make room. A real client sends `connect` as soon as it has the
challenge and is done in milliseconds, so sockets that never send it only push out each other,
and a flood from one address (every local program is 127.0.0.1) cannot lock others out. Being
evicted is a matter of capacity, never a failed login.
"""

from __future__ import annotations

from collections.abc import Callable


class PendingHandshakes:
    def __init__(self, max_total: int, max_per_ip: int) -> None:
        self._max_total = max_total
        self._max_per_ip = max_per_ip
        # Oldest first (dicts keep insertion order); per address only those holding a slot.
        self._all: dict[Slot, None] = {}
        self._by_ip: dict[str, dict[Slot, None]] = {}

    def __len__(self) -> int:
        return len(self._all)

    def take(self, ip: str, evict: Callable[[], None]) -> Slot:
        """A slot for a new socket from `ip`. `evict` closes that socket if it is later pushed
        out by a newer one; it is called at most once, after the slot is given back."""
        mine = self._by_ip.get(ip)
        if mine is not None and len(mine) >= self._max_per_ip:
            next(iter(mine)).evict()
        if len(self._all) >= self._max_total:
            next(iter(self._all)).evict()
        slot = Slot(self, ip, evict)
        self._all[slot] = None
        self._by_ip.setdefault(ip, {})[slot] = None
        return slot

    def _give_back(self, slot: Slot) -> None:
        del self._all[slot]
        mine = self._by_ip[slot.ip]
        del mine[slot]
        if not mine:
            del self._by_ip[slot.ip]


class Slot:
    """Held from the upgrade until the handshake succeeded or the socket is gone."""

    __slots__ = ("_evict", "_owner", "ip")

    def __init__(self, owner: PendingHandshakes, ip: str, evict: Callable[[], None]) -> None:
        self._owner: PendingHandshakes | None = owner
        self._evict = evict
        self.ip = ip

    def release(self) -> None:
        """Give the slot back; later calls do nothing."""
        if self._owner is not None:
            self._owner._give_back(self)
            self._owner = None

    def evict(self) -> None:
        """Give the slot back and close its socket (to make room for a newer one)."""
        if self._owner is not None:
            self.release()
            self._evict()
