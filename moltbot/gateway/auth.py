"""Shared-secret auth for HTTP and the WS handshake, with a failed-attempt limit per client IP,
and who the client is: the socket's peer, or what trusted proxies forward."""

from __future__ import annotations

import hmac
import ipaddress
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from aiohttp import web
from multidict import CIMultiDictProxy

from moltbot.config.model import AuthConfig, RateLimitConfig
from moltbot.gateway.errors import RateLimited, Unauthorized

# Bound on how many client IPs the limiter remembers, so a flood of addresses cannot grow memory.
MAX_TRACKED_CLIENTS = 10_000
# An IPv6 client is counted by its /64: one host usually holds a whole /64 (SLAAC, privacy
# addresses), so counting single addresses would give it 2^64 fresh tries.
IPV6_CLIENT_PREFIX = 64


def is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


def normalize_ip(text: str) -> str | None:
    """`text` as an IP address in its short form (an IPv4-mapped IPv6 address as IPv4), or None
    when it is not one."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def socket_ip(request: web.Request) -> str:
    """The socket's peer address (a dual-stack listener shows IPv4 peers as ::ffff:a.b.c.d)."""
    peer = request.remote or ""
    return (normalize_ip(peer) or peer) if peer.startswith("::ffff:") else peer


def forwarded_client(headers: CIMultiDictProxy[str], trusted: frozenset[str]) -> str | None:
    """The client address that trusted proxies report, or None when they report none usable.

    X-Forwarded-For is read right to left: each proxy appends the address it was connected from,
    so the first entry that is not a trusted proxy is the client, and whatever lies to its left
    was written by that client and is ignored. X-Real-IP counts only without X-Forwarded-For."""
    values = headers.getall("X-Forwarded-For", ())
    if not values:
        real_ip = headers.get("X-Real-IP")
        return _hop_address(real_ip) if real_ip else None
    address = None
    for hop in reversed(",".join(values).split(",")):
        address = _hop_address(hop)
        if address is None:
            return None  # not an address where a proxy's entry should be: do not guess
        if address not in trusted:
            return address
    return address  # every hop is a trusted proxy: the first one made the request


def _hop_address(hop: str) -> str | None:
    """One X-Forwarded-For entry: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]:80`."""
    hop = hop.strip()
    if hop.startswith("["):
        hop = hop[1:].partition("]")[0]
    elif hop.count(":") == 1:
        hop = hop.partition(":")[0]
    return normalize_ip(hop)


def bearer_token(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


FORWARDING_HEADERS = ("X-Forwarded-For", "X-Real-IP", "Forwarded")


def _secret_bytes(text: str) -> bytes:
    # Headers and JSON can carry lone surrogates; they must fail the compare, not crash it.
    return text.encode("utf-8", "surrogatepass")


@dataclass(slots=True)
class _Client:
    failures: deque[float] = field(default_factory=deque)
    locked_until: float = 0.0


def client_key(ip: str) -> str:
    """What failures are counted by: an IPv4 address, or an IPv6 address's /64."""
    if ":" not in ip:
        return ip
    try:
        network = ipaddress.IPv6Network((ip, IPV6_CLIENT_PREFIX), strict=False)
    except ValueError:
        return ip
    return str(network)


class FailureLimiter:
    """Counts failed attempts per client (see `client_key`) in a sliding window; too many lock
    the client out."""

    def __init__(
        self, config: RateLimitConfig, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._config = config
        self._clock = clock
        # Oldest first; bounded, so a flood of addresses cannot grow memory.
        self._clients: OrderedDict[str, _Client] = OrderedDict()

    def retry_after(self, ip: str) -> int | None:
        """Seconds the client must still wait, or None if it may try."""
        client = self._clients.get(client_key(ip))
        remaining = client.locked_until - self._clock() if client else 0
        return max(1, math.ceil(remaining)) if remaining > 0 else None

    def record_failure(self, ip: str) -> None:
        now = self._clock()
        ip = client_key(ip)
        client = self._clients.pop(ip, None) or _Client()
        client.failures.append(now)
        while client.failures and client.failures[0] <= now - self._config.window_ms / 1000:
            client.failures.popleft()
        if len(client.failures) >= self._config.max_attempts:
            client.locked_until = now + self._config.lockout_ms / 1000
            client.failures.clear()
        self._clients[ip] = client
        if len(self._clients) > MAX_TRACKED_CLIENTS:
            self._clients.popitem(last=False)

    def record_success(self, ip: str) -> None:
        client = self._clients.get(client_key(ip))
        if client is not None:
            client.failures.clear()


class Authenticator:
    """Checks a presented secret against the configured one in constant time."""

    def __init__(self, auth: AuthConfig, trusted_proxies: Iterable[str] = ()) -> None:
        self._secret = _secret_bytes(auth.secret or "")
        self._exempt_loopback = auth.rate_limit.exempt_loopback
        self.trusted_proxies = frozenset(normalize_ip(p) or p for p in trusted_proxies)
        self.limiter = FailureLimiter(auth.rate_limit)

    def check(self, presented: str | None, ip: str, *, exemptable: bool = True) -> None:
        """Raise `RateLimited` or `Unauthorized`, or return when the secret matches.

        `exemptable`: the loopback exemption may apply (see `client`)."""
        limited = not self._exempt(ip, exemptable)
        if limited and (wait := self.limiter.retry_after(ip)) is not None:
            raise RateLimited(wait)
        if (
            self._secret
            and presented
            and hmac.compare_digest(_secret_bytes(presented), self._secret)
        ):
            self.limiter.record_success(ip)
            return
        if limited:
            self.limiter.record_failure(ip)
        raise Unauthorized()

    def note_failure(self, ip: str, *, exemptable: bool = True) -> None:
        """Count a failed attempt that never got as far as a secret (e.g. a broken handshake)."""
        if not self._exempt(ip, exemptable):
            self.limiter.record_failure(ip)

    def _exempt(self, ip: str, exemptable: bool) -> bool:
        return self._exempt_loopback and exemptable and is_loopback(ip)

    def client(self, request: web.Request) -> tuple[str, bool]:
        """(client IP, exemptable) for `check` and `note_failure`.

        The IP is the socket's peer, or the address trusted proxies forward for it; forwarding
        headers from anyone else are ignored, so they cannot pick a lockout key. Exemptable
        means a local program talking to us directly: not forwarded (a proxy on this host would
        exempt everyone behind it), and not from a browser page (any request with `Origin`),
        which must never get unlimited guesses just because the browser runs here."""
        peer = socket_ip(request)
        headers = request.headers
        if peer in self.trusted_proxies:
            forwarded = forwarded_client(headers, self.trusted_proxies)
            if forwarded is not None:
                return forwarded, False
        exemptable = "Origin" not in headers and not any(h in headers for h in FORWARDING_HEADERS)
        return peer, exemptable

    def check_request(self, request: web.Request) -> None:
        ip, exemptable = self.client(request)
        self.check(bearer_token(request), ip, exemptable=exemptable)
