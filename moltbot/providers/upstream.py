"""The HTTP side shared by the network providers: one session, one POST, one read loop.

Each provider owns one `UpstreamClient`, and through it one `aiohttp.ClientSession` for all its
calls. The session is created on first use because it must belong to the running event loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import orjson

from moltbot.config.model import ProviderConfig
from moltbot.config.redact import masked_url
from moltbot.providers.base import ProviderError, StreamItem
from moltbot.providers.errors import status_error, transport_error
from moltbot.providers.scrub import Scrubber
from moltbot.providers.sse import StreamDecoder

# Enough of an error body to find its message; the rest is not worth waiting for.
MAX_ERROR_BODY_BYTES = 64 * 1024


class UpstreamClient:
    def __init__(
        self,
        provider: str,
        scrubber: Scrubber,
        *,
        connect_timeout: float,
        read_timeout: float,
    ) -> None:
        self._provider = provider
        self._scrubber = scrubber
        # No total timeout: a long answer may stream for minutes as long as bytes keep coming.
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout, sock_read=read_timeout
        )
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"UpstreamClient(provider={self._provider!r})"

    async def stream(
        self,
        url: str,
        headers: Mapping[str, str],
        body: dict[str, Any],
        decoder: StreamDecoder,
    ) -> AsyncIterator[StreamItem]:
        """POST `body` and yield the decoded answer as its bytes arrive.

        Closing this generator early (aclose, cancellation) leaves the `async with` below,
        which closes the response and so drops the upstream connection at once."""
        async with self._post(url, headers, body) as response:
            if _is_json(response):
                for item in decoder.whole_answer(decoder.parse_json(await response.read())):
                    yield item
                return
            async for chunk in response.content.iter_any():
                for item in decoder.feed(chunk):
                    yield item
                if decoder.done:
                    return
            for item in decoder.finish():
                yield item

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _open_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # No connection cap: concurrency is bounded by agents.defaults.maxConcurrent, and
            # aiohttp's default of 100 would silently queue runs beyond it.
            connector = aiohttp.TCPConnector(limit=0)
            self._session = aiohttp.ClientSession(timeout=self._timeout, connector=connector)
        return self._session

    @asynccontextmanager
    async def _post(
        self, url: str, headers: Mapping[str, str], body: dict[str, Any]
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """The successful response; any failure, also while the caller reads the body, comes
        out as a scrubbed `ProviderError`."""
        post = self._open_session().post
        try:
            data = orjson.dumps(body)  # ~10x faster than json.dumps on a long history
            async with post(url, data=data, headers=headers, allow_redirects=False) as response:
                await self._raise_for_status(response)
                try:
                    yield response
                except BaseException:
                    response.close()  # never hand a half-read connection back to the pool
                    raise
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._scrubber.error(transport_error(self._provider, exc)) from None
        except ProviderError as exc:
            raise self._scrubber.error(exc) from None

    async def _raise_for_status(self, response: aiohttp.ClientResponse) -> None:
        if 200 <= response.status < 300:
            return
        raw = await _read_at_most(response.content, MAX_ERROR_BODY_BYTES)
        retry_after = response.headers.get("Retry-After")
        text = raw.decode("utf-8", errors="replace")
        raise status_error(self._provider, response.status, text, retry_after)


def endpoint_url(base_url: str, path: str) -> str:
    """`path` appended to the base URL's path; its query string (Azure's `?api-version=`, a
    proxy's `?key=`) stays at the end."""
    parts = urlsplit(base_url)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + path))


def _is_json(response: aiohttp.ClientResponse) -> bool:
    mimetype = response.content_type
    return mimetype == "application/json" or mimetype.endswith("+json")


async def _read_at_most(content: aiohttp.StreamReader, limit: int) -> bytes:
    data = bytearray()
    while len(data) < limit:
        chunk = await content.read(limit - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)


class HttpProvider:
    """What the network providers share: a name, one URL, fixed headers (the provider's
    builder sets Content-Type and the API key) and one `UpstreamClient`."""

    def __init__(
        self,
        config: ProviderConfig,
        path: str,
        headers: dict[str, str],
        *,
        connect_timeout: float,
        read_timeout: float,
    ) -> None:
        self.name = config.name
        self._url = endpoint_url(config.base_url, path)
        self._headers = headers
        self._client = UpstreamClient(
            config.name,
            Scrubber.for_provider(config),
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
        )

    def __repr__(self) -> str:  # the default would show the headers, API key included
        return f"{type(self).__name__}(name={self.name!r}, url={masked_url(self._url)!r})"

    async def close(self) -> None:
        await self._client.close()
