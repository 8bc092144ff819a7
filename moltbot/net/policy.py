"""What one kind of fetch may do: its size and time caps, redirects, hosts and content types.

`allowed_hosts` is the only way through the address checks (for users who do fetch from their
intranet). Its entries come in two sorts:

- host names, matched against the URL's host exactly (case-insensitive, trailing dot ignored),
  or `*.example.com`, matching every name below example.com but not example.com itself: every
  address such a host resolves to is allowed;
- IP addresses and CIDR networks (`127.0.0.1`, `[::1]`, `10.0.0.0/8`): the address checks let
  these addresses through, whichever host name resolves to them; every other address still has
  to be public. An IPv4-mapped IPv6 address matches its IPv4 entry.

A bad entry or a bad value is a ValueError when the policy is made, so a config check can report
it before anything is fetched.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Address, IPv6Network

from yarl import URL

from moltbot.net.addresses import IPAddress

_LABEL = r"(?!-)[a-z0-9_-]{1,63}(?<!-)"
_HOST_NAME = re.compile(rf"{_LABEL}(\.{_LABEL})*")
_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/(\*|[a-z0-9][a-z0-9!#$&^_.+-]*)")


def host_key(host: str) -> str:
    """A host name as the allowlist and the address pins compare it."""
    return host.rstrip(".").lower()


@dataclass(frozen=True)
class HostAllowlist:
    names: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()  # ".example.com" for "*.example.com"
    networks: tuple[IPv4Network | IPv6Network, ...] = ()

    @classmethod
    def parse(cls, entries: tuple[str, ...]) -> HostAllowlist:
        names: set[str] = set()
        suffixes: list[str] = []
        networks: list[IPv4Network | IPv6Network] = []
        for entry in entries:
            text = _ascii(entry.strip().lower())
            network = _network(text)
            if network is not None:
                networks.append(network)
            elif text.startswith("*.") and _HOST_NAME.fullmatch(host_key(text[2:])):
                suffixes.append("." + host_key(text[2:]))
            elif _HOST_NAME.fullmatch(host_key(text)):
                names.add(host_key(text))
            else:
                raise ValueError(
                    f"allowed host {entry!r} is not a host name, '*.domain', IP address or network"
                )
        return cls(frozenset(names), tuple(suffixes), tuple(networks))

    def allows_name(self, host: str) -> bool:
        key = host_key(host)
        return key in self.names or key.endswith(self.suffixes)

    def allows_address(self, address: IPAddress) -> bool:
        if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)


@dataclass(frozen=True)
class FetchPolicy:
    """Caps and permissions for one kind of fetch (image URLs, the `web_fetch` tool)."""

    max_bytes: int  # the body, after any Content-Encoding is undone
    timeout_seconds: float  # the whole fetch: lookups, connections, redirects, body
    max_redirects: int = 3
    allowed_hosts: tuple[str, ...] = ()  # see the module docstring
    allowed_content_types: tuple[str, ...] | None = None  # "image/png", "image/*"; None: any
    allowlist: HostAllowlist = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, not {self.max_bytes}")
        if not self.timeout_seconds > 0:
            raise ValueError(f"timeout_seconds must be positive, not {self.timeout_seconds}")
        if self.max_redirects < 0:
            raise ValueError(f"max_redirects must be 0 or more, not {self.max_redirects}")
        if isinstance(self.allowed_hosts, str):
            raise ValueError("allowed_hosts must be a tuple of strings, not one string")
        for media_type in self.allowed_content_types or ():
            if not _MEDIA_TYPE.fullmatch(media_type):
                raise ValueError(
                    f"allowed content type {media_type!r} is not 'type/subtype' or 'type/*' "
                    "(lower case, no parameters)"
                )
        # Parsed once here: a frozen dataclass has no other place to keep it.
        object.__setattr__(self, "allowlist", HostAllowlist.parse(tuple(self.allowed_hosts)))

    def allows_content_type(self, media_type: str) -> bool:
        if self.allowed_content_types is None:
            return True
        family = media_type.split("/", 1)[0] + "/*"
        return media_type in self.allowed_content_types or family in self.allowed_content_types


def _ascii(text: str) -> str:
    """A non-ASCII name in the punycode form the URL's host will have."""
    if text.isascii():
        return text
    try:
        return URL.build(scheme="http", host=text).raw_host or text
    except ValueError:
        return text  # refused by the caller's pattern


def _network(text: str) -> IPv4Network | IPv6Network | None:
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None
