"""Checks for the gateway's network keys: allowed browser origins, allowed Host names, and the
connection limits. Values are normalised here, once, so the per-request checks are plain set
lookups."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from moltbot.config.checks import Context, Node, as_number, as_string, as_tuple, given
from moltbot.config.model import LimitsConfig
from moltbot.config.wording import quote

LIMITS_KEYS = (
    "maxConnections",
    "maxConnectionsPerIp",
    "headersTimeoutSeconds",
    "bodyTimeoutSeconds",
)
# Deadlines shorter than this would cut off ordinary clients on a slow link.
MIN_TIMEOUT_SECONDS = 1.0
DEFAULT_PORTS = {"http": 80, "https": 443}
# One DNS name: dot-separated labels of letters, digits, "-" and "_" (lower case by now).
_HOST_NAME = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*")


def as_origin_list(value: object, path: str, ctx: Context) -> tuple[str, ...] | None:
    return as_tuple(value, path, ctx, as_origin)


def as_host_names(value: object, path: str, ctx: Context) -> tuple[str, ...] | None:
    return as_tuple(value, path, ctx, as_host)


def as_origin(value: object, path: str, ctx: Context) -> str | None:
    """`scheme://host[:port]` as a browser sends it in `Origin`: lower case, no default port,
    IPv6 in brackets."""
    text = as_string(value, path, ctx)
    if text is None:
        return None
    origin = _origin(text.strip())
    if origin is None:
        hint = "; list each origin, wildcards are not supported" if "*" in text else ""
        ctx.problem(
            path,
            'expected an origin such as "https://chat.example.com" or "http://localhost:3000" '
            f"(scheme, host and port only){hint}, got {quote(text)}",
        )
    return origin


def _origin(text: str) -> str | None:
    parts = urlsplit(text)
    try:
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname
    if (
        parts.scheme not in DEFAULT_PORTS
        or not host
        or "@" in parts.netloc
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
    ):
        return None
    shown = _bracketed(host)
    if shown is None:
        return None
    if port is not None and port != DEFAULT_PORTS[parts.scheme]:
        shown = f"{shown}:{port}"
    return f"{parts.scheme}://{shown}"


def as_host(value: object, path: str, ctx: Context) -> str | None:
    """A host name or IP address as it appears in a Host header, without the port."""
    text = as_string(value, path, ctx)
    if text is None:
        return None
    host = text.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    name = _bracketed(host)
    if name is not None:
        return name
    if "://" in host:
        hint = " (a host name, not a URL)"
    elif host.count(":") == 1 and host.rpartition(":")[2].isdigit():
        hint = " (without a port: any port is accepted)"
    else:
        hint = ""
    ctx.problem(
        path,
        f'expected a host name such as "gateway.example.com" or an IP address{hint}, '
        f"got {quote(text)}",
    )
    return None


def _bracketed(host: str) -> str | None:
    """`host` (lower case, no brackets) as a Host header writes it, or None if it is neither an
    IP address nor a DNS name."""
    try:
        address = str(ipaddress.ip_address(host))  # the short form browsers send
    except ValueError:
        return host if _HOST_NAME.fullmatch(host) else None
    return f"[{address}]" if ":" in address else address


def limits_section(node: Node) -> LimitsConfig:
    node.check_keys(LIMITS_KEYS)
    return LimitsConfig(
        **given(
            max_connections=node.integer("maxConnections"),
            max_connections_per_ip=node.integer("maxConnectionsPerIp"),
            headers_timeout_seconds=node.get("headersTimeoutSeconds", _as_timeout),
            body_timeout_seconds=node.get("bodyTimeoutSeconds", _as_timeout),
        )
    )


def _as_timeout(value: object, path: str, ctx: Context) -> float | None:
    return as_number(value, path, ctx, minimum=MIN_TIMEOUT_SECONDS)

