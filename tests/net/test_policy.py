"""FetchPolicy: its checks on construction, and how allowed hosts and content types match."""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest

from moltbot.net.policy import FetchPolicy


def make(**changes: object) -> FetchPolicy:
    return FetchPolicy(**{"max_bytes": 10, "timeout_seconds": 1.0, **changes})  # type: ignore[arg-type]


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"max_bytes": 0}, "max_bytes must be at least 1, not 0"),
        ({"timeout_seconds": 0}, "timeout_seconds must be positive, not 0"),
        ({"timeout_seconds": float("nan")}, "timeout_seconds must be positive, not nan"),
        ({"max_redirects": -1}, "max_redirects must be 0 or more, not -1"),
        ({"allowed_hosts": "localhost"}, "allowed_hosts must be a tuple of strings"),
        ({"allowed_hosts": ("*",)}, "allowed host '*' is not a host name"),
        ({"allowed_hosts": ("http://intranet/",)}, "allowed host 'http://intranet/' is not"),
        ({"allowed_hosts": ("a b",)}, "allowed host 'a b' is not"),
        ({"allowed_hosts": ("*.",)}, "allowed host '*.' is not"),
        ({"allowed_hosts": ("intra*.corp",)}, "allowed host 'intra*.corp' is not"),
        ({"allowed_hosts": ("10.0.0.0/33",)}, "allowed host '10.0.0.0/33' is not"),
        ({"allowed_content_types": ("image",)}, "allowed content type 'image' is not"),
        ({"allowed_content_types": ("image/png; q=1",)}, "allowed content type"),
        ({"allowed_content_types": ("Image/PNG",)}, "(lower case, no parameters)"),
    ],
)
def test_bad_policies_are_refused(changes: dict[str, object], message: str):
    with pytest.raises(ValueError) as caught:
        make(**changes)
    assert message in str(caught.value)


def test_host_names_match_exactly_or_below_a_wildcard():
    allowlist = make(allowed_hosts=("Intranet.Corp.", "*.lab.example", "bücher.example")).allowlist
    assert allowlist.allows_name("intranet.corp")
    assert allowlist.allows_name("INTRANET.corp.")
    assert not allowlist.allows_name("www.intranet.corp")
    assert not allowlist.allows_name("intranet.corp.evil")
    assert allowlist.allows_name("a.lab.example")
    assert allowlist.allows_name("a.b.lab.example")
    assert not allowlist.allows_name("lab.example")
    assert not allowlist.allows_name("evillab.example")
    assert allowlist.allows_name("xn--bcher-kva.example")  # the form a URL's host has
    assert not allowlist.allows_address(ip("10.0.0.1"))


def test_addresses_and_networks():
    allowlist = make(allowed_hosts=("127.0.0.1", "10.0.0.0/8", "[::1]", "fd00::/8")).allowlist
    assert allowlist.allows_address(ip("127.0.0.1"))
    assert not allowlist.allows_address(ip("127.0.0.2"))
    assert allowlist.allows_address(ip("10.200.0.1"))
    assert allowlist.allows_address(ip("::ffff:10.200.0.1"))  # IPv4-mapped matches its IPv4
    assert allowlist.allows_address(ip("::1"))
    assert allowlist.allows_address(ip("fd12::1"))
    assert not allowlist.allows_address(ip("192.168.0.1"))
    assert not allowlist.allows_name("127.0.0.1")


def test_content_types():
    assert make().allows_content_type("text/html")
    images = make(allowed_content_types=("image/png", "text/*"))
    assert images.allows_content_type("image/png")
    assert images.allows_content_type("text/html")
    assert not images.allows_content_type("image/jpeg")
    assert not images.allows_content_type("application/octet-stream")


def test_replace_parses_the_new_hosts():
    changed = dataclasses.replace(make(allowed_hosts=("a.test",)), allowed_hosts=("b.test",))
    assert changed.allowlist.allows_name("b.test")
    assert not changed.allowlist.allows_name("a.test")
    assert changed == make(allowed_hosts=("b.test",))
