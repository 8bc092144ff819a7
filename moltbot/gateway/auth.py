"""Shared-secret auth for HTTP and the WS handshake, with a failed-attempt limit per client IP."""

from __future__ import annotations

import hmac
import ipaddress
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable

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


class FailureLimiter:
    """Counts failed attempts per client in a sliding window; too many lock the client out."""

    def __init__(
        self, config: RateLimitConfig, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._config = config
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._locked_until: dict[str, float] = {}

    def retry_after(self, ip: str) -> int | None:
        """Seconds the client must still wait, or None if it may try."""
        until = self._locked_until.get(ip)
        if until is None:
            return None
        remaining = until - self._clock()
        if remaining <= 0:
            del self._locked_until[ip]
            return None
        return max(1, math.ceil(remaining))

    def record_failure(self, ip: str) -> None:
        now = self._clock()
        window = self._failures.pop(ip, None) or deque()
        window.append(now)
        while window and window[0] <= now - self._config.window_ms / 1000:
            window.popleft()
        if len(window) >= self._config.max_attempts:
            self._locked_until[ip] = now + self._config.lockout_ms / 1000
            window.clear()
        self._failures[ip] = window
        if len(self._failures) > MAX_TRACKED_CLIENTS:
            self._failures.popitem(last=False)

    def record_success(self, ip: str) -> None:
        self._failures.pop(ip, None)


class Authenticator:
    """Checks a presented secret against the configured one in constant time."""

    def __init__(self, auth: AuthConfig, trusted_proxies: Iterable[str] = ()) -> None:
        self._secret = (auth.secret or "").encode()
        self._exempt_loopback = auth.rate_limit.exempt_loopback
        self.trusted_proxies = frozenset(trusted_proxies)
        self.limiter = FailureLimiter(auth.rate_limit)

    def check(self, presented: str | None, ip: str) -> None:
        """Raise `RateLimited` or `Unauthorized`, or return when the secret matches."""
        limited = not (self._exempt_loopback and is_loopback(ip))
        if limited and (wait := self.limiter.retry_after(ip)) is not None:
            raise RateLimited(wait)
        if self._secret and presented and hmac.compare_digest(presented.encode(), self._secret):
            self.limiter.record_success(ip)
            return
        if limited:
            self.limiter.record_failure(ip)
        raise Unauthorized()

    def check_request(self, request: web.Request) -> None:
        self.check(bearer_token(request), client_ip(request, self.trusted_proxies))
