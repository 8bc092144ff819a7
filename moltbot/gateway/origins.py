"""Host and Origin checks, in one middleware: what stops web pages in the user's browser.

Any page can make the browser send requests to 127.0.0.1, and a DNS-rebinding page can do it
under its own name, so that the browser treats the gateway as the page's own origin. Two rules,
applied to every path (/healthz too: one rule with no exceptions to reason about):

- Host: when bound to loopback (or when `gateway.allowedHosts` is set), the Host header must
  name localhost, 127.0.0.1, [::1] (any port), the address bound to, or an allowed host;
  otherwise 421. A rebinding page always sends its own name. A request without Host (HTTP/1.0
  tools) names nothing that could be rebound and passes.
- Origin: a request that carries one (browsers send it on every WebSocket upgrade and on
  cross-origin and POST requests) must come from the gateway's own origin, `http(s)://` plus
  the Host header when the Host names one of the hosts above or an IP address (the web chat
  page opened at http://192.168.1.5:18789/ on a LAN bind), or from `gateway.allowedOrigins`;
  otherwise 403, before auth (a refused page gets no guesses at all). Requests without Origin
  (CLI, SDKs, curl) are unaffected. Allowed pages are still rate-limited (see auth.py).

Per request this is two header lookups and a set lookup (more only with an Origin header).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from moltbot.config.model import GatewayConfig
from moltbot.gateway.auth import is_loopback, normalize_ip
from moltbot.gateway.errors import Forbidden, GatewayError, MisdirectedRequest

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]"})
# Host header values already accepted, so the common request costs one set lookup. Bounded: a
# client sending ever new values (ports) only stops it from growing.
MAX_REMEMBERED_HOSTS = 256
# Header values quoted back in an error message are cut to this.
MAX_QUOTED_CHARS = 100


class BrowserPolicy:
    """The allowed Host names and origins, computed once from the config."""

    def __init__(self, gateway: GatewayConfig) -> None:
        hosts = set(LOOPBACK_HOSTS) | set(gateway.allowed_hosts)
        bound = normalize_ip(gateway.host)
        if bound is not None and bound not in ("0.0.0.0", "::"):
            hosts.add(f"[{bound}]" if ":" in bound else bound)
        self.hosts = frozenset(hosts)
        self.origins = frozenset(gateway.allowed_origins)
        self.check_host = is_loopback(gateway.host) or bool(gateway.allowed_hosts)
        self._accepted: set[str] = set()

    def refusal(self, host: str | None, origin: str | None) -> GatewayError | None:
        """Why a request with these Host and Origin headers is refused, or None."""
        if self.check_host and host is not None and host not in self._accepted:
            if host_name(host) not in self.hosts:
                return MisdirectedRequest(
                    f"host {_quoted(host)} is not allowed: the gateway answers to "
                    "localhost, 127.0.0.1 and [::1]; add other names to gateway.allowedHosts",
                    code="host_not_allowed",
                )
            if len(self._accepted) < MAX_REMEMBERED_HOSTS:
                self._accepted.add(host)
        if origin is not None and not self._origin_allowed(origin, host):
            return Forbidden(
                f"origin {_quoted(origin)} is not allowed: only the gateway's own origin and "
                "gateway.allowedOrigins may call it from a browser",
                code="origin_not_allowed",
            )
        return None

    def _origin_allowed(self, origin: str, host: str | None) -> bool:
        origin = origin.lower()
        if origin in self.origins:
            return True
        if host is None or not self._own_host(host_name(host)):
            return False
        host = host.lower()
        scheme, sep, rest = origin.partition("://")
        return bool(sep) and rest == host and scheme in ("http", "https")

    def _own_host(self, name: str) -> bool:
        """A name whose pages are the gateway's own: one of the hosts above, or any IP
        address (a page can only have an IP origin if the browser went to that address, and
        then this port is the gateway's; rebinding needs a DNS name)."""
        return name in self.hosts or normalize_ip(name.strip("[]")) is not None


def host_name(host: str) -> str:
    """The Host header without its port, lower case: `[::1]:80` -> `[::1]`."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end != -1 else host
    name, _, port = host.partition(":")
    # An unbracketed IPv6 address or a second colon is no valid Host: keep it whole to refuse.
    return name if ":" not in port else host


def _quoted(value: str | None) -> str:
    text = value or ""
    if len(text) > MAX_QUOTED_CHARS:
        text = text[: MAX_QUOTED_CHARS - 3] + "..."
    return f'"{text}"'


BROWSER_POLICY_KEY = web.AppKey("browser_policy", BrowserPolicy)


@web.middleware
async def browser_policy_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    headers = request.headers
    refusal = request.app[BROWSER_POLICY_KEY].refusal(headers.get("Host"), headers.get("Origin"))
    if refusal is not None:
        raise refusal
    return await handler(request)
