"""A bound on sockets that have not finished their handshake, in all and per client address.

aiohttp sets a socket's largest frame (maxPayload) when the socket is made; it cannot be lowered
for just the handshake. So an unauthenticated socket may make the gateway read a frame of up to
maxPayload before the smaller pre-auth limit can be checked, and what unauthenticated clients
can make the gateway hold is bounded by how many of them there may be at once. The per-address
cap keeps one client from taking every slot.
"""

from __future__ import annotations


class PendingHandshakes:
    def __init__(self, max_total: int, max_per_ip: int) -> None:
        self._max_total = max_total
        self._max_per_ip = max_per_ip
        self._total = 0
        self._by_ip: dict[str, int] = {}  # only addresses holding a slot: at most max_total

    def __len__(self) -> int:
        return self._total

    def take(self, ip: str) -> Slot | None:
        """A slot for a new socket from `ip`, or None when a cap is reached."""
        held = self._by_ip.get(ip, 0)
        if self._total >= self._max_total or held >= self._max_per_ip:
            return None
        self._by_ip[ip] = held + 1
        self._total += 1
        return Slot(self, ip)

    def _give_back(self, ip: str) -> None:
        self._total -= 1
        left = self._by_ip[ip] - 1
        if left:
            self._by_ip[ip] = left
        else:
            del self._by_ip[ip]


class Slot:
    """Held from the upgrade until the handshake succeeded or the socket is gone."""

    __slots__ = ("_ip", "_owner")

    def __init__(self, owner: PendingHandshakes, ip: str) -> None:
        self._owner: PendingHandshakes | None = owner
        self._ip = ip

    def release(self) -> None:
        """Give the slot back; later calls do nothing."""
        if self._owner is not None:
            self._owner._give_back(self._ip)
            self._owner = None
