"""The guarded fetcher against a real aiohttp server on 127.0.0.1 (and [::1]).

Every test runs under the `network` fixture: lookups and connection attempts are recorded, and a
connection to anything but loopback is refused before a packet leaves, so `network.connects`
shows exactly where the fetcher tried to go.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest

from moltbot.net.fetch import MAX_URL_CHARS, Fetched, FetchPolicy, FetchRefused, fetch
from tests.net.conftest import Network, TlsUpstream, Upstream

pytestmark = pytest.mark.usefixtures("network")

DEFAULT = FetchPolicy(max_bytes=100_000, timeout_seconds=5)
LOCAL = FetchPolicy(max_bytes=100_000, timeout_seconds=5, allowed_hosts=("127.0.0.1",))


def policy(**changes: object) -> FetchPolicy:
    fields: dict[str, object] = {
        "max_bytes": 100_000,
        "timeout_seconds": 5,
        "allowed_hosts": ("127.0.0.1",),
    }
    fields.update(changes)
    return FetchPolicy(**fields)  # type: ignore[arg-type]


async def refused(url: str, fetch_policy: FetchPolicy) -> str:
    with pytest.raises(FetchRefused) as caught:
        await fetch(url, fetch_policy)
    return str(caught.value)


# -- loopback: refused by default, allowed when named -------------------------------------------


async def test_loopback_address_is_refused_by_default(upstream: Upstream, network: Network):
    url = upstream.url("/ok")
    assert await refused(url, DEFAULT) == f"refused to fetch {url}: loopback address"
    assert network.connects == []
    assert upstream.hits == []


async def test_a_name_is_resolved_and_its_addresses_checked(upstream: Upstream, network: Network):
    url = f"http://localhost:{upstream.port}/ok"
    message = await refused(url, DEFAULT)
    assert (
        message == f"refused to fetch {url}: localhost resolves to a non-public address (loopback)"
    )
    assert network.lookups == ["localhost"]
    assert network.connects == []


async def test_ipv6_loopback_is_refused_by_default(upstream: Upstream, network: Network):
    if upstream.v6_port is None:
        pytest.skip("no IPv6 loopback on this machine")
    url = f"http://[::1]:{upstream.v6_port}/ok"
    assert await refused(url, DEFAULT) == f"refused to fetch {url}: loopback address"
    assert network.connects == []


async def test_allowed_address_is_fetched(upstream: Upstream, network: Network):
    fetched = await fetch(upstream.url("/ok"), LOCAL)
    assert fetched == Fetched(
        url=upstream.url("/ok"),
        status=200,
        content_type="text/plain",
        charset="utf-8",
        body=b"hello",
    )
    assert network.connects == [("127.0.0.1", upstream.port)]
    assert upstream.paths() == ["/ok"]


async def test_allowed_network_covers_a_name_resolving_into_it(
    upstream: Upstream, network: Network
):
    allowed = policy(allowed_hosts=("127.0.0.0/8",))
    fetched = await fetch(f"http://localhost:{upstream.port}/ok", allowed)
    assert fetched.body == b"hello"
    assert network.lookups == ["localhost"]
    assert network.connects == [("127.0.0.1", upstream.port)]


async def test_allowed_name_covers_that_name_only(upstream: Upstream):
    by_name = policy(allowed_hosts=("LocalHost.",))
    assert (await fetch(f"http://localhost:{upstream.port}/ok", by_name)).body == b"hello"
    url = upstream.url("/ok")
    assert await refused(url, by_name) == f"refused to fetch {url}: loopback address"


async def test_wildcard_covers_names_below_the_domain(upstream: Upstream, network: Network):
    network.answers["api.intranet.test"] = [["127.0.0.1"]]
    network.answers["intranet.test"] = [["127.0.0.1"]]
    wildcard = policy(allowed_hosts=("*.intranet.test",))
    fetched = await fetch(f"http://api.intranet.test:{upstream.port}/ok", wildcard)
    assert fetched.body == b"hello"
    url = f"http://intranet.test:{upstream.port}/ok"
    assert await refused(url, wildcard) == (
        f"refused to fetch {url}: intranet.test resolves to a non-public address (loopback)"
    )


# -- what the lookup says decides, and the connection goes where the lookup was checked ---------


async def test_one_private_address_among_public_ones_refuses_the_host(network: Network):
    network.answers["mixed.test"] = [["93.184.215.14", "10.0.0.1"]]
    message = await refused("http://mixed.test/", DEFAULT)
    assert message == (
        "refused to fetch http://mixed.test/: mixed.test resolves to a non-public address (private)"
    )
    assert "10.0.0.1" not in message  # the gateway's view of DNS stays its own
    assert network.connects == []


async def test_a_public_address_passes_and_is_the_one_connected_to(network: Network):
    # The test network refuses the connection itself, before any packet is sent.
    network.answers["public.test"] = [["93.184.215.14"]]
    message = await refused("https://public.test/image.png", DEFAULT)
    assert message == (
        "could not fetch https://public.test/image.png: could not connect to the server"
    )
    assert network.connects == [("93.184.215.14", 443)]
    assert network.lookups == ["public.test"]  # aiohttp did not look the name up again


async def test_the_checked_address_is_pinned_against_rebinding(
    upstream: Upstream, network: Network
):
    # The second answer would point elsewhere; the fetch never asks for it.
    network.answers["rebind.test"] = [["127.0.0.1"], ["10.9.9.9"]]
    allowed = policy(allowed_hosts=("127.0.0.0/8",))
    fetched = await fetch(f"http://rebind.test:{upstream.port}/ok", allowed)
    assert fetched.body == b"hello"
    assert network.lookups == ["rebind.test"]
    assert network.connects == [("127.0.0.1", upstream.port)]
    assert upstream.host_headers == [f"rebind.test:{upstream.port}"]  # the name, not the address


async def test_a_redirect_to_the_same_name_is_checked_again(upstream: Upstream, network: Network):
    network.answers["rebind.test"] = [["127.0.0.1"], ["10.9.9.9"]]
    allowed = policy(allowed_hosts=("127.0.0.0/8",))
    url = f"http://rebind.test:{upstream.port}/redirect?to=/ok"
    message = await refused(url, allowed)
    assert message == (
        f"refused to fetch http://rebind.test:{upstream.port}/ok: "
        "rebind.test resolves to a non-public address (private)"
    )
    assert network.lookups == ["rebind.test", "rebind.test"]
    assert network.connects == [("127.0.0.1", upstream.port)]


async def test_tls_uses_the_name_while_connecting_to_the_pinned_address(
    tls_upstream: TlsUpstream, network: Network
):
    # The certificate is for secure.test but signed by nobody the client trusts: the handshake
    # shows which name was asked for, then fails the certificate check.
    network.answers["secure.test"] = [["127.0.0.1"]]
    url = f"https://secure.test:{tls_upstream.port}/ok"
    message = await refused(url, policy(allowed_hosts=("127.0.0.0/8",)))
    assert message == f"could not fetch {url}: the server's TLS certificate was not accepted"
    assert tls_upstream.server_names == ["secure.test"]
    assert network.connects == [("127.0.0.1", tls_upstream.port)]


async def test_unknown_host_is_a_clear_failure(network: Network):
    message = await refused("http://nowhere.test/x", DEFAULT)
    assert (
        message
        == "could not fetch http://nowhere.test/x: the host name nowhere.test does not resolve"
    )
    assert network.connects == []


# -- redirects ----------------------------------------------------------------------------------


def redirect_to(upstream: Upstream, target: str, status: int = 302) -> str:
    return upstream.url(f"/redirect?status={status}&to={quote(target, safe='')}")


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("http://10.0.0.1/", "private address"),
        ("http://169.254.169.254/latest/meta-data/", "link-local address"),
        ("http://[fd00:ec2::254]/latest/meta-data/", "private address"),
        ("http://[::ffff:10.0.0.1]/", "private address"),
        ("http://[64:ff9b::a9fe:a9fe]/", "link-local address"),  # NAT64 of 169.254.169.254
        ("http://0.0.0.0/", "unspecified address"),
        ("http://100.100.100.200/", "shared (CGNAT) address"),
        ("http://metadata.google.internal/computeMetadata/v1/", "a cloud metadata host"),
        ("http://METADATA.google.internal./", "a cloud metadata host"),
        ("http://intranet.test/", "intranet.test resolves to a non-public address (private)"),
        ("http://2130706433/", "a numeric host that is not a canonical IPv4 address"),
        ("file:///etc/passwd", "only http and https URLs can be fetched"),
        ("gopher://127.0.0.1:6379/_INFO", "only http and https URLs can be fetched"),
    ],
)
async def test_redirect_to_a_refused_target_is_refused_without_connecting(
    upstream: Upstream, network: Network, target: str, reason: str
):
    network.answers["intranet.test"] = [["10.1.2.3"]]
    message = await refused(redirect_to(upstream, target), LOCAL)
    assert message.startswith("refused to fetch ")
    assert message.endswith(f": {reason}")
    assert network.connects == [("127.0.0.1", upstream.port)]  # the first hop only
    assert len(upstream.hits) == 1
    assert not any("metadata" in name for name in network.lookups)


async def test_redirect_to_ipv6_loopback_never_reaches_its_listener(
    upstream: Upstream, network: Network
):
    if upstream.v6_port is None:
        pytest.skip("no IPv6 loopback on this machine")
    target = f"http://[::1]:{upstream.v6_port}/ok"
    message = await refused(redirect_to(upstream, target), LOCAL)
    assert message == f"refused to fetch {target}: loopback address"
    assert network.connects == [("127.0.0.1", upstream.port)]
    assert [address for address, _ in upstream.hits] == ["127.0.0.1"]


async def test_redirect_with_credentials_is_refused_without_showing_them(
    upstream: Upstream, network: Network
):
    target = f"http://user:s3cret@127.0.0.1:{upstream.port}/ok"
    message = await refused(redirect_to(upstream, target), LOCAL)
    assert message == (
        f"refused to fetch http://127.0.0.1:{upstream.port}/ok: "
        "credentials in the URL are not allowed"
    )
    assert "s3cret" not in message
    assert len(network.connects) == 1


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_redirects_are_followed(upstream: Upstream, status: int):
    fetched = await fetch(redirect_to(upstream, "/ok", status), LOCAL)
    assert (fetched.url, fetched.status, fetched.body) == (upstream.url("/ok"), 200, b"hello")


async def test_redirect_cap(upstream: Upstream):
    fetched = await fetch(upstream.url("/chain/3"), policy(max_redirects=3))
    assert (fetched.url, fetched.body) == (upstream.url("/chain/0"), b"end of chain")
    upstream.hits.clear()
    message = await refused(upstream.url("/chain/4"), policy(max_redirects=3))
    assert message == f"refused to fetch {upstream.url('/chain/1')}: more than 3 redirects"
    assert upstream.paths() == ["/chain/4", "/chain/3", "/chain/2", "/chain/1"]
    message = await refused(upstream.url("/chain/1"), policy(max_redirects=0))
    assert message.endswith(": more than 0 redirects")


async def test_redirect_without_location(upstream: Upstream):
    url = upstream.url("/no-location")
    message = await refused(url, LOCAL)
    assert message == f"could not fetch {url}: a redirect without a Location"


# -- caps: size, time, status, content type -----------------------------------------------------


async def test_size_cap_with_content_length(upstream: Upstream):
    assert len((await fetch(upstream.url("/bytes/1000"), policy(max_bytes=1000))).body) == 1000
    url = upstream.url("/bytes/1000")
    message = await refused(url, policy(max_bytes=999))
    assert message == f"refused to fetch {url}: larger than 999 bytes"


async def test_size_cap_while_streaming(upstream: Upstream):
    assert len((await fetch(upstream.url("/chunked/5000"), policy(max_bytes=5000))).body) == 5000
    message = await refused(upstream.url("/chunked/5000"), policy(max_bytes=4999))
    assert message.endswith(": larger than 4999 bytes")


async def test_declared_length_is_refused_before_the_body(upstream: Upstream):
    # The server sends 100 bytes of a declared 10 GB and waits: without the header check this
    # would run into the deadline.
    message = await refused(
        upstream.url("/declares-huge"), policy(max_bytes=1000, timeout_seconds=2)
    )
    assert message.endswith(": larger than 1000 bytes")


async def test_size_cap_counts_decompressed_bytes(upstream: Upstream):
    fetched = await fetch(upstream.url("/gzip/1000"), policy(max_bytes=1000))
    assert fetched.body == b"\0" * 1000
    message = await refused(upstream.url("/gzip/1000000"), policy(max_bytes=100_000))
    assert message.endswith(": larger than 100000 bytes")


@pytest.mark.parametrize("path", ["/trickle", "/silent", "/slow-chain/3"])
async def test_one_deadline_for_the_whole_fetch(upstream: Upstream, path: str):
    # /slow-chain answers every hop in 0.2 s: each is quick, the four together are not.
    url = upstream.url(path)
    message = await refused(url, policy(timeout_seconds=0.5))
    assert message == f"could not fetch {url}: timed out after 0.5 s"


async def test_non_2xx_is_refused_with_the_status(upstream: Upstream):
    url = upstream.url("/status/404")
    message = await refused(url, LOCAL)
    assert message == f"could not fetch {url}: the server answered 404 Not Found"
    assert (await refused(upstream.url("/status/599"), LOCAL)).endswith(": the server answered 599")


async def test_content_type_check(upstream: Upstream):
    images = policy(allowed_content_types=("image/png", "image/jpeg"))
    assert (await fetch(upstream.url("/png"), images)).content_type == "image/png"
    url = upstream.url("/ok")
    message = await refused(url, images)
    assert message == f"refused to fetch {url}: content type text/plain is not allowed"
    family = policy(allowed_content_types=("image/*",))
    assert (await fetch(upstream.url("/png"), family)).body.startswith(b"\x89PNG")
    mixed_case = upstream.url("/type?ct=" + quote("IMAGE/PNG; charset=X"))
    fetched = await fetch(mixed_case, images)
    assert (fetched.content_type, fetched.charset) == ("image/png", "X")
    no_type = upstream.url("/type")
    assert (await refused(no_type, images)).endswith(
        ": content type application/octet-stream is not allowed"
    )


# -- URLs refused before anything else ----------------------------------------------------------


NOT_HTTP = "only http and https URLs can be fetched"
CREDENTIALS = "credentials in the URL are not allowed"
NUMERIC = "a numeric host that is not a canonical IPv4 address"


@pytest.mark.parametrize(
    ("url", "shown", "reason"),
    [
        ("file:///etc/passwd", None, NOT_HTTP),
        ("ftp://127.0.0.1/x", None, NOT_HTTP),
        ("ws://127.0.0.1/", None, NOT_HTTP),
        ("javascript:alert(1)", None, NOT_HTTP),
        ("data:image/png;base64,AAAA", None, NOT_HTTP),
        ("//127.0.0.1/x", None, NOT_HTTP),
        ("", None, NOT_HTTP),
        ("http:///x", None, "the URL has no host"),
        ("http://127.0.0.1:99999/", None, "not a valid URL"),
        ("http://user:pw@127.0.0.1/", "http://127.0.0.1/", CREDENTIALS),
        ("http://user@127.0.0.1/", "http://127.0.0.1/", CREDENTIALS),
        ("http://:pw@127.0.0.1/", "http://127.0.0.1/", CREDENTIALS),
        ("http://127.1/", None, NUMERIC),
        ("http://0x7f.0.0.1/", None, NUMERIC),
        ("http://0177.0.0.1/", None, NUMERIC),
        ("http://127.0.0.1./", None, NUMERIC),
    ],
)
async def test_bad_urls_are_refused_before_any_lookup(
    network: Network, url: str, shown: str | None, reason: str
):
    # Allowed hosts do not make a bad URL good.
    anything = policy(allowed_hosts=("0.0.0.0/0", "::/0"))
    assert await refused(url, anything) == f"refused to fetch {shown or url}: {reason}"
    assert network.lookups == []
    assert network.connects == []


async def test_no_proxy_from_the_environment(
    upstream: Upstream, network: Network, monkeypatch: pytest.MonkeyPatch
):
    # A proxy would make the connection itself, wherever the URL points.
    monkeypatch.setenv("HTTP_PROXY", upstream.url(""))
    monkeypatch.setenv("http_proxy", upstream.url(""))
    network.answers["public.test"] = [["93.184.215.14"]]
    message = await refused("http://public.test/", DEFAULT)
    assert message.endswith(": could not connect to the server")
    assert network.connects == [("93.184.215.14", 80)]
    assert upstream.hits == []


async def test_overlong_url_is_refused_and_not_echoed_whole():
    url = "http://example.test/" + "a" * MAX_URL_CHARS
    message = await refused(url, DEFAULT)
    assert message.endswith(f": URL longer than {MAX_URL_CHARS} characters")
    assert len(message) < 300
