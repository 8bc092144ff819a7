"""Failures both network providers must classify the same way."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import pytest

from moltbot.config.model import ProviderConfig
from moltbot.providers.base import ErrorKind, TextDelta
from moltbot.providers.errors import parse_retry_after, transport_error
from moltbot.providers.openai_compat import OpenAICompatProvider
from tests.fake_upstreams import FakeUpstream
from tests.providers.streams import API_KEY, collect_error, make_request, provider_for, text_of


@pytest.mark.parametrize(
    ("status", "kind", "retryable"),
    [
        (401, "auth", False),
        (403, "auth", False),
        (429, "rate_limit", True),
        (408, "timeout", True),
        (504, "timeout", True),
        (400, "upstream", False),
        (404, "upstream", False),
        (422, "upstream", False),
        (500, "upstream", True),
        (503, "upstream", True),
        (529, "upstream", True),
    ],
)
async def test_http_status_mapping(
    any_up: FakeUpstream, status: int, kind: ErrorKind, retryable: bool
) -> None:
    any_up.status(status)
    async with provider_for(any_up) as provider:
        _, error = await collect_error(provider.stream(make_request()))
    assert (error.kind, error.status, error.retryable) == (kind, status, retryable)
    assert f"fake error {status}" in str(error)  # the upstream's own error.message


async def test_rate_limit_reads_retry_after(any_up: FakeUpstream) -> None:
    any_up.status(429, headers={"Retry-After": "3"})
    async with provider_for(any_up) as provider:
        _, error = await collect_error(provider.stream(make_request()))
    assert error.retry_after == 3.0


def test_retry_after_forms() -> None:
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


async def test_long_and_non_json_error_bodies(any_up: FakeUpstream) -> None:
    any_up.status(500, body={"error": {"message": "x" * 1000}})
    any_up.status(502, body="<html>Bad gateway</html>")
    async with provider_for(any_up) as provider:
        _, long_error = await collect_error(provider.stream(make_request()))
        _, html_error = await collect_error(provider.stream(make_request()))
    assert "x" * 300 in str(long_error) and "x" * 301 not in str(long_error)
    assert "<html>Bad gateway</html>" in str(html_error)


async def test_reset_mid_stream_is_a_connection_error(any_up: FakeUpstream) -> None:
    any_up.reset_after(2)
    async with provider_for(any_up) as provider:
        items, error = await collect_error(provider.stream(make_request()))
    assert text_of(items) == "Hello from"
    assert error.kind == "connection" and error.retryable


async def test_malformed_data_line(any_up: FakeUpstream) -> None:
    any_up.malformed(after_chunks=1)
    async with provider_for(any_up) as provider:
        items, error = await collect_error(provider.stream(make_request()))
    assert text_of(items) == "Hello"
    assert error.kind == "malformed"


@pytest.mark.parametrize("after_chunks", [None, 1])
async def test_silent_upstream_hits_the_read_timeout(
    any_up: FakeUpstream, after_chunks: int | None
) -> None:
    any_up.hang(after_chunks=after_chunks)
    async with provider_for(any_up, read_timeout=0.3) as provider:
        items, error = await collect_error(provider.stream(make_request()))
    assert len(items) == (after_chunks or 0)
    assert error.kind == "timeout" and error.retryable


async def test_connection_refused() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and has no listener
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = ProviderConfig("up", f"http://127.0.0.1:{port}/v1", "openai-completions", API_KEY)
    provider = OpenAICompatProvider(config)
    try:
        _, error = await collect_error(provider.stream(make_request()))
    finally:
        await provider.close()
    assert error.kind == "connection" and error.retryable
    assert API_KEY not in str(error)


# -- closing early releases the upstream at once -------------------------------------------


async def test_aclose_mid_stream_disconnects_upstream(any_up: FakeUpstream) -> None:
    any_up.hang(after_chunks=1)
    async with provider_for(any_up) as provider:
        stream = provider.stream(make_request())
        assert await anext(stream) == TextDelta("Hello")
        await stream.aclose()  # type: ignore[attr-defined]
        await any_up.wait_disconnect()
    assert any_up.active_streams == 0


@pytest.mark.parametrize("after_chunks", [None, 1])
async def test_cancelling_the_consumer_disconnects_upstream(
    any_up: FakeUpstream, after_chunks: int | None
) -> None:
    any_up.hang(after_chunks=after_chunks)
    async with provider_for(any_up) as provider:
        consumer = asyncio.create_task(collect_error(provider.stream(make_request())))
        await any_up.wait_until(lambda: any_up.active_streams == 1)
        consumer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await consumer
        await any_up.wait_disconnect()


# -- the API key never leaks ---------------------------------------------------------------


async def test_api_key_echoed_by_upstream_is_masked(any_up: FakeUpstream) -> None:
    any_up.status(401, body={"error": {"message": f"Incorrect API key provided: {API_KEY}"}})
    any_up.status(400, body=f"bad key {API_KEY}")
    any_up.error_frame(f"stream died holding {API_KEY}", after_chunks=1)
    async with provider_for(any_up) as provider:
        errors = [(await collect_error(provider.stream(make_request())))[1] for _ in range(3)]
        assert API_KEY not in repr(provider)
    for error in errors:
        assert API_KEY not in str(error) and API_KEY not in repr(error)
        assert "***" in str(error)
    sent = any_up.requests[0].headers  # the key really went upstream
    assert API_KEY in (sent.get("x-api-key", ""), sent.get("Authorization", "")[7:])


async def test_invalid_base_url_is_a_config_error() -> None:
    provider = OpenAICompatProvider(ProviderConfig("up", "not-a-url", "openai-completions"))
    try:
        _, error = await collect_error(provider.stream(make_request()))
    finally:
        await provider.close()
    assert error.kind == "config"


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (aiohttp.ConnectionTimeoutError("connect"), "connection"),
        (aiohttp.SocketTimeoutError("read"), "timeout"),
        (aiohttp.ServerDisconnectedError(), "connection"),
        (aiohttp.ClientPayloadError("cut"), "connection"),
    ],
)
def test_transport_error_kinds(exc: Exception, kind: ErrorKind) -> None:
    assert transport_error("up", exc).kind == kind
