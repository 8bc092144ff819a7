"""Which IP addresses and host names a fetch on a caller's behalf must never reach.

`non_public_kind` names the kind of a non-public address ("loopback", "private", ...) or returns
None for an address on the public internet. The tables are written out rather than taken from
`ipaddress`'s `is_private` / `is_global`, whose lists differ between Python releases and miss
IPv6 forms that carry an IPv4 address (NAT64, 6to4, IPv4-compatible); `is_global` is still
consulted last, so anything it knows to be non-public is refused too.
"""

from __future__ import annotations

import ipaddress
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

IPAddress = IPv4Address | IPv6Address

# Host names of cloud metadata services. Their addresses are refused anyway (169.254.169.254,
# fd00:ec2::254, 100.100.100.200, 192.0.0.192); the names are refused before any lookup, so no
# DNS query for them leaves the gateway and a resolver that maps them elsewhere changes nothing.
METADATA_HOSTS = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.platformequinix.com",
        "metadata.packet.net",
    }
)


def _v4(*rules: tuple[str, str]) -> tuple[tuple[IPv4Network, str], ...]:
    return tuple((IPv4Network(net), kind) for net, kind in rules)


def _v6(*rules: tuple[str, str]) -> tuple[tuple[IPv6Network, str], ...]:
    return tuple((IPv6Network(net), kind) for net, kind in rules)


_V4_RULES = _v4(
    ("0.0.0.0/8", "unspecified"),  # "this network"; connecting to 0.0.0.0 reaches this host
    ("127.0.0.0/8", "loopback"),
    ("10.0.0.0/8", "private"),
    ("172.16.0.0/12", "private"),
    ("192.168.0.0/16", "private"),
    ("169.254.0.0/16", "link-local"),  # includes the cloud metadata address 169.254.169.254
    ("100.64.0.0/10", "shared (CGNAT)"),  # includes Alibaba's metadata 100.100.100.200
    ("192.0.0.0/24", "reserved"),  # IETF protocol assignments, includes Oracle's 192.0.0.192
    ("192.0.2.0/24", "reserved"),  # documentation
    ("198.51.100.0/24", "reserved"),  # documentation
    ("203.0.113.0/24", "reserved"),  # documentation
    ("198.18.0.0/15", "reserved"),  # benchmarking
    ("192.88.99.0/24", "reserved"),  # retired 6to4 relay anycast
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),  # includes the broadcast address 255.255.255.255
)

_V6_EXACT = _v6(("::/128", "unspecified"), ("::1/128", "loopback"))

# IPv6 forms whose last 32 bits are an IPv4 address: the IPv4 address decides.
_V6_EMBEDDING_V4 = (
    IPv6Network("::ffff:0:0/96"),  # IPv4-mapped
    IPv6Network("::/96"),  # IPv4-compatible (deprecated)
    IPv6Network("::ffff:0:0:0/96"),  # IPv4-translated
    IPv6Network("64:ff9b::/96"),  # NAT64, well-known prefix
)

_V6_RULES = _v6(
    ("fc00::/7", "private"),  # unique local, includes AWS's metadata fd00:ec2::254
    ("fec0::/10", "private"),  # deprecated site-local
    ("64:ff9b:1::/48", "private"),  # local-use NAT64 prefix (RFC 8215)
    ("fe80::/10", "link-local"),
    ("ff00::/8", "multicast"),
    ("100::/64", "reserved"),  # discard-only
    ("2001::/32", "reserved"),  # Teredo: the client's address is hidden in the bits
    ("2001:db8::/32", "reserved"),  # documentation
    ("3fff::/20", "reserved"),  # documentation (RFC 9637)
)


def non_public_kind(address: IPAddress) -> str | None:
    """The kind of a non-public address ("loopback", "private", "link-local", ...), or None
    when the address is on the public internet."""
    if isinstance(address, IPv4Address):
        return _v4_kind(address)
    return _v6_kind(address)


def parse_ip(host: str) -> IPAddress | None:
    """The address when `host` is an IP literal (IPv6 without brackets, zone allowed)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _v4_kind(address: IPv4Address) -> str | None:
    for network, kind in _V4_RULES:
        if address in network:
            return kind
    return None if address.is_global else "non-public"


def _v6_kind(address: IPv6Address) -> str | None:
    for network, kind in _V6_EXACT:
        if address in network:
            return kind
    for network in _V6_EMBEDDING_V4:
        if address in network:
            return _v4_kind(IPv4Address(int(address) & 0xFFFFFFFF))
    if address.sixtofour is not None:  # 2002::/16 routes to the IPv4 address in bits 16-48
        return _v4_kind(address.sixtofour)
    for network, kind in _V6_RULES:
        if address in network:
            return kind
    return None if address.is_global else "non-public"
