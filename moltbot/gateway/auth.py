"""Shared-secret auth for HTTP and the WS handshake, with a failed-attempt limit per client IP."""

from __future__ import annotations

import hmac
import ipaddress
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from aiohttp import web

from moltbot.config.model import AuthConfig, RateLimitConfig
from moltbot.gateway.errors import RateLimited, Unauthorized

# Bound on how many client IPs the limiter remembers, so a flood of addresses cannot grow memory.
MAX_TRACKED_CLIENTS = 10_000


def is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


def client_ip(request: web.Request, trusted_proxies: frozenset[str]) -> str:
    """The client's address: the socket peer, or, when the peer is a trusted proxy, the nearest
    untrusted address in X-Forwarded-For (X-Real-IP as a fallback)."""
    peer = request.remote or ""
    if peer not in trusted_proxies:
        return peer
    forwarded = [part.strip() for part in request.headers.get("X-Forwarded-For", "").split(",")]
    for hop in reversed([f for f in forwarded if f]):
        if hop not in trusted_proxies:
            return hop
    return request.headers.get("X-Real-IP", "").strip() or peer


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


class FailureLimiter:
    """Counts failed attempts per client in a sliding window; too many lock the client out."""

    def __init__(
        self, config: RateLimitConfig, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._config = config
        self._clock = clock
        # Oldest first; bounded, so a flood of addresses cannot grow memory.
        self._clients: OrderedDict[str, _Client] = OrderedDict()

    def retry_after(self, ip: str) -> int | None:
        """Seconds the client must still wait, or None if it may try."""
        client = self._clients.get(ip)
        remaining = client.locked_until - self._clock() if client else 0
        return max(1, math.ceil(remaining)) if remaining > 0 else None

    def record_failure(self, ip: str) -> None:
        now = self._clock()
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
        client = self._clients.get(ip)
        if client is not None:
            client.failures.clear()


class Authenticator:
    """Checks a presented secret against the configured one in constant time."""

    def __init__(self, auth: AuthConfig, trusted_proxies: Iterable[str] = ()) -> None:
        self._secret = _secret_bytes(auth.secret or "")
        self._exempt_loopback = auth.rate_limit.exempt_loopback
        self.trusted_proxies = frozenset(trusted_proxies)
        self.limiter = FailureLimiter(auth.rate_limit)

    def check(self, presented: str | None, ip: str, *, direct: bool = True) -> None:
        """Raise `RateLimited` or `Unauthorized`, or return when the secret matches.

        `direct`: the request came straight from the client, not through an untrusted proxy on
        this host (whose clients would otherwise all share the loopback exemption)."""
        limited = not self._exempt(ip, direct)
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

    def note_failure(self, ip: str, *, direct: bool = True) -> None:
        """Count a failed attempt that never got as far as a secret (e.g. a broken handshake)."""
        if not self._exempt(ip, direct):
            self.limiter.record_failure(ip)

    def _exempt(self, ip: str, direct: bool) -> bool:
        return self._exempt_loopback and direct and is_loopback(ip)

    def client(self, request: web.Request) -> tuple[str, bool]:
        """(client IP, whether it connected directly) for `check` and `note_failure`."""
        ip = client_ip(request, self.trusted_proxies)
        proxied = request.remote not in self.trusted_proxies and any(
            h in request.headers for h in FORWARDING_HEADERS
        )
        return ip, not proxied

    def check_request(self, request: web.Request) -> None:
        ip, direct = self.client(request)
        self.check(bearer_token(request), ip, direct=direct)
