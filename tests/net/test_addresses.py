"""The address classifier on a table: every kind the fetcher refuses, and public addresses."""

from __future__ import annotations

import ipaddress

import pytest

from moltbot.net.addresses import METADATA_HOSTS, non_public_kind, parse_ip

REFUSED = [
    # IPv4
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "unspecified"),
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("10.0.0.1", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "link-local"),
    ("169.254.0.1", "link-local"),
    ("100.64.0.1", "shared (CGNAT)"),
    ("100.100.100.200", "shared (CGNAT)"),
    ("100.127.255.255", "shared (CGNAT)"),
    ("192.0.0.192", "reserved"),
    ("192.0.2.1", "reserved"),
    ("198.18.0.1", "reserved"),
    ("198.51.100.7", "reserved"),
    ("203.0.113.9", "reserved"),
    ("192.88.99.1", "reserved"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
    # IPv6
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("fc00::1", "private"),
    ("fd00:ec2::254", "private"),
    ("fec0::1", "private"),
    ("fe80::1", "link-local"),
    ("fe80::1%eth0", "link-local"),
    ("febf::1", "link-local"),
    ("ff02::1", "multicast"),
    ("ff0e::1", "multicast"),
    ("100::1", "reserved"),
    ("2001:db8::1", "reserved"),
    ("2001::1", "reserved"),
    ("3fff::1", "reserved"),
    ("64:ff9b:1::a00:1", "private"),
    # IPv6 carrying an IPv4 address: the IPv4 address decides
    ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:10.0.0.1", "private"),
    ("::ffff:169.254.169.254", "link-local"),
    ("::ffff:0.0.0.0", "unspecified"),
    ("::127.0.0.1", "loopback"),
    ("::10.0.0.1", "private"),
    ("::ffff:0:127.0.0.1", "loopback"),
    ("64:ff9b::127.0.0.1", "loopback"),
    ("64:ff9b::10.0.0.1", "private"),
    ("64:ff9b::169.254.169.254", "link-local"),
    ("2002:7f00:1::1", "loopback"),
    ("2002:a00:1::", "private"),
    ("2002:c0a8:101::1", "private"),
]

PUBLIC = [
    "1.1.1.1",
    "8.8.8.8",
    "93.184.215.14",
    "100.63.255.255",  # just below CGNAT
    "100.128.0.0",  # just above
    "172.15.255.255",
    "172.32.0.0",
    "192.0.1.1",
    "223.255.255.254",
    "2606:4700:4700::1111",
    "2a00:1450:4001:80e::200e",
    "::ffff:8.8.8.8",
    "64:ff9b::8.8.8.8",
    "2002:808:808::1",
]


@pytest.mark.parametrize(("text", "kind"), REFUSED)
def test_non_public_addresses(text: str, kind: str):
    assert non_public_kind(ipaddress.ip_address(text)) == kind


@pytest.mark.parametrize("text", PUBLIC)
def test_public_addresses(text: str):
    assert non_public_kind(ipaddress.ip_address(text)) is None


def test_what_is_global_refuses_is_refused_too():
    # 2001:2::/48 (benchmarking) is not in our tables, only in Python's.
    assert not ipaddress.ip_address("2001:2::1").is_global
    assert non_public_kind(ipaddress.ip_address("2001:2::1")) == "non-public"


def test_parse_ip():
    assert parse_ip("127.0.0.1") == ipaddress.ip_address("127.0.0.1")
    assert parse_ip("::1") == ipaddress.ip_address("::1")
    for not_literal in ("localhost", "127.1", "2130706433", "[::1]", "", "0x7f.0.0.1", "01.2.3.4"):
        assert parse_ip(not_literal) is None


def test_metadata_host_names():
    assert "metadata.google.internal" in METADATA_HOSTS
    assert all(name == name.lower().rstrip(".") for name in METADATA_HOSTS)
