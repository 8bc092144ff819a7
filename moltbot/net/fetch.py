"""Fetch an http(s) URL named by an untrusted caller without letting it reach private networks.

Used where a client or a model chooses the URL: image URLs in chat requests and the agent's
`web_fetch` tool. `await fetch(url, policy)` returns a `Fetched` (final URL, status, media type,
charset, body) or raises `FetchRefused`. Its message is safe to show to the caller: "refused to
fetch URL: reason" when a rule below refused, "could not fetch URL: reason" when the fetch
failed (no such host, no connection, timeout, a non-2xx status). The URL is shown without
credentials and cut to 200 characters; an address a host name resolved to is never shown, so
the gateway's view of its network does not leak; of what a server sent, only the status code
(with the standard phrase, not the server's), a redirect target and a media type appear.

Each hop, the first URL and every redirect target alike, goes through the same checks before
any connection is attempted:

1. Only `http` and `https`, with a host, and no `user:password@` in the URL. Numeric hosts that
   are not a canonical dotted quad (`2130706433`, `127.1`, `0x7f.0.0.1`) are refused rather than
   guessed at.
2. Cloud metadata host names (`metadata.google.internal`, ...) are refused without a lookup.
3. The host name is resolved with the event loop's resolver (`loop.getaddrinfo`, which runs off
   the loop), and every address it resolves to must be public: no loopback, private (RFC 1918,
   fc00::/7), link-local (169.254/16 with the metadata address, fe80::/10), CGNAT (100.64/10),
   unspecified, multicast, reserved or documentation addresses, nor IPv6 forms that carry such
   an IPv4 address (IPv4-mapped, IPv4-compatible, NAT64 64:ff9b::/96, 6to4). The tables are in
   `moltbot.net.addresses`. One non-public address refuses the host: a name that points both
   outward and inward is treated as pointing inward.
4. `policy.allowed_hosts` is the only way past 2 and 3 (see `moltbot.net.policy`): a host name
   listed there skips both; a listed address or network lets those addresses through step 3,
   as a literal or whatever name resolves to them.

The connection then goes to the checked addresses and no others: the fetch's own connector
has a resolver that answers only with the addresses pinned by step 3 (and refuses any host
not checked), so a DNS answer that changes between check and connect (DNS rebinding) has no
effect. The URL keeps its host name, so the Host header, TLS SNI and certificate checks use it.

Redirects (301, 302, 303, 307, 308) are followed by hand, at most `policy.max_redirects`, always
as GET, each target checked as above. The whole fetch, lookups included, has one deadline
(`policy.timeout_seconds`). The body is capped at `policy.max_bytes`: a larger Content-Length
is refused before reading, and the bytes are counted as they arrive (after gzip/deflate is
undone, so a small compressed body cannot grow past the cap). A status other than 2xx, or a
media type outside `policy.allowed_content_types` when the policy lists them, is refused before
the body is read.

Each fetch has its own client session, so no proxy from the environment, no cookies and no
default headers of some other session come with it; this is why `fetch` takes no session.
"""

from __future__ import annotations

import asyncio
import re
import socket
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import unquote

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from moltbot import __version__
from moltbot.net.addresses import METADATA_HOSTS, IPAddress, non_public_kind, parse_ip
from moltbot.net.policy import FetchPolicy, host_key

__all__ = ["FetchPolicy", "FetchRefused", "Fetched", "fetch"]

MAX_URL_CHARS = 8192
_SHOWN_CHARS = 200  # of a URL or a media type in a message
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# All-numeric hosts the C library would read as an IPv4 address in some legacy form.
_NUMERIC_HOST = re.compile(r"(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}\.?")
_NUMERIC_FLAGS = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV


class FetchRefused(Exception):
    """The fetch was refused or failed; the message says what and why and is safe to show to
    whoever asked for the URL."""


@dataclass(frozen=True)
class Fetched:
    url: str  # after redirects
    status: int
    content_type: str  # media type, lower case, no parameters ("application/octet-stream" if none)
    charset: str | None  # the Content-Type's charset parameter, if any
    body: bytes


async def fetch(url: str, policy: FetchPolicy) -> Fetched:
    """GET `url` under `policy`; the module docstring has the rules."""
    target = _parse(url, shown=_shown(url))
    resolver = _PinnedResolver()
    try:
        async with asyncio.timeout(policy.timeout_seconds), _open_session(resolver) as session:
            return await _follow(session, target, policy, resolver)
    except TimeoutError:
        raise FetchRefused(
            _failed(target, f"timed out after {policy.timeout_seconds:g} s")
        ) from None


async def _follow(
    session: aiohttp.ClientSession, url: URL, policy: FetchPolicy, resolver: _PinnedResolver
) -> Fetched:
    redirects = 0
    while True:
        resolver.pin(url.raw_host or "", await _checked_addresses(url, policy))
        try:
            async with session.get(url, allow_redirects=False) as response:
                if response.status not in _REDIRECTS:
                    return await _read(url, response, policy)
                if redirects == policy.max_redirects:
                    raise FetchRefused(_refused(url, f"more than {redirects} redirects"))
                location = response.headers.get("Location")
                if location is None:
                    raise FetchRefused(_failed(url, "a redirect without a Location"))
        except aiohttp.ClientError as exc:
            raise FetchRefused(_failed(url, _transport_reason(exc))) from None
        redirects += 1
        url = _parse(location, base=url, shown=f"the redirect target of {_shown_url(url)}")


def _parse(raw: str, *, shown: str, base: URL | None = None) -> URL:
    """The URL, if its scheme, host and form may be fetched at all."""
    if len(raw) > MAX_URL_CHARS:
        raise FetchRefused(f"refused to fetch {shown}: URL longer than {MAX_URL_CHARS} characters")
    try:
        url = URL(raw)
        if base is not None:
            url = base.join(url)
    except (ValueError, TypeError):
        raise FetchRefused(f"refused to fetch {shown}: not a valid URL") from None
    url = url.with_fragment(None)
    if url.scheme not in ("http", "https"):
        raise FetchRefused(_refused(url, "only http and https URLs can be fetched"))
    if url.raw_user is not None or url.raw_password is not None:
        raise FetchRefused(_refused(url, "credentials in the URL are not allowed"))
    if not url.raw_host:
        raise FetchRefused(_refused(url, "the URL has no host"))
    return url


async def _checked_addresses(url: URL, policy: FetchPolicy) -> tuple[IPAddress, ...]:
    """The addresses this hop may connect to, or FetchRefused."""
    raw_host = url.raw_host or ""
    literal = parse_ip(unquote(raw_host))  # an IPv6 zone arrives as %25 in the URL
    if literal is not None:
        kind = non_public_kind(literal)
        if kind is not None and not policy.allowlist.allows_address(literal):
            raise FetchRefused(_refused(url, f"{kind} address"))
        return (literal,)
    if _NUMERIC_HOST.fullmatch(raw_host):
        raise FetchRefused(_refused(url, "a numeric host that is not a canonical IPv4 address"))
    host = host_key(raw_host)
    if policy.allowlist.allows_name(host):
        return await _resolve(url)
    if host in METADATA_HOSTS:
        raise FetchRefused(_refused(url, "a cloud metadata host"))
    addresses = await _resolve(url)
    for address in addresses:
        kind = non_public_kind(address)
        if kind is not None and not policy.allowlist.allows_address(address):
            raise FetchRefused(_refused(url, f"{host} resolves to a non-public address ({kind})"))
    return addresses


async def _resolve(url: URL) -> tuple[IPAddress, ...]:
    host, port = url.raw_host or "", url.port or 0
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise FetchRefused(_failed(url, f"the host name {host} does not resolve")) from None
    addresses: dict[IPAddress, None] = {}  # ordered, without repeats
    for *_, sockaddr in infos:
        address = parse_ip(str(sockaddr[0]))
        if address is not None:
            addresses[address] = None
    if not addresses:
        raise FetchRefused(_failed(url, f"the host name {host} has no IP address"))
    return tuple(addresses)


class _PinnedResolver(AbstractResolver):
    """aiohttp's resolver for one fetch: the checked addresses of checked hosts, nothing else."""

    def __init__(self) -> None:
        self._pins: dict[str, tuple[IPAddress, ...]] = {}

    def pin(self, host: str, addresses: tuple[IPAddress, ...]) -> None:
        self._pins[host_key(host)] = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = self._pins.get(host_key(host))
        if not addresses:
            raise OSError(f"{host} was not checked")  # cannot happen; fail closed if it does
        results: list[ResolveResult] = []
        for address in addresses:
            address_family = socket.AF_INET if address.version == 4 else socket.AF_INET6
            if family in (socket.AF_UNSPEC, address_family):
                results.append(
                    ResolveResult(
                        hostname=host,
                        host=str(address),
                        port=port,
                        family=address_family,
                        proto=socket.IPPROTO_TCP,
                        flags=_NUMERIC_FLAGS,
                    )
                )
        return results

    async def close(self) -> None:
        self._pins.clear()


def _open_session(resolver: _PinnedResolver) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False)
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        headers={"User-Agent": f"moltbot/{__version__}"},
        timeout=aiohttp.ClientTimeout(total=None),  # fetch() keeps the one deadline
        trust_env=False,  # an HTTP(S)_PROXY would connect wherever it likes
    )


async def _read(url: URL, response: aiohttp.ClientResponse, policy: FetchPolicy) -> Fetched:
    if not 200 <= response.status < 300:
        raise FetchRefused(_failed(url, f"the server answered {_status(response.status)}"))
    media_type = response.content_type
    if not policy.allows_content_type(media_type):
        raise FetchRefused(_refused(url, f"content type {_shown(media_type)} is not allowed"))
    too_large = f"larger than {policy.max_bytes} bytes"
    if response.content_length is not None and response.content_length > policy.max_bytes:
        raise FetchRefused(_refused(url, too_large))
    body = bytearray()
    async for chunk in response.content.iter_any():
        if len(body) + len(chunk) > policy.max_bytes:
            raise FetchRefused(_refused(url, too_large))
        body += chunk
    return Fetched(
        url=str(url),
        status=response.status,
        content_type=media_type,
        charset=response.charset,
        body=bytes(body),
    )


def _status(code: int) -> str:
    try:
        return f"{code} {HTTPStatus(code).phrase}"  # not the server's own reason text
    except ValueError:
        return str(code)


def _transport_reason(exc: aiohttp.ClientError) -> str:
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return "the server's TLS certificate was not accepted"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "could not connect to the server"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the body was cut off or malformed"
    return "the server's answer could not be read"


def _refused(url: URL, reason: str) -> str:
    return f"refused to fetch {_shown_url(url)}: {reason}"


def _failed(url: URL, reason: str) -> str:
    return f"could not fetch {_shown_url(url)}: {reason}"


def _shown_url(url: URL) -> str:
    if url.raw_user is not None or url.raw_password is not None:
        url = url.with_user(None)  # drops the password too
    return _shown(str(url))


def _shown(text: str) -> str:
    """Text from outside, made printable and short enough for a message."""
    printable = "".join(c if c.isprintable() else "?" for c in text[: _SHOWN_CHARS + 1])
    return printable if len(printable) <= _SHOWN_CHARS else printable[:_SHOWN_CHARS] + "…"
