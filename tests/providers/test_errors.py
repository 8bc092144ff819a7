"""Failures both network providers must classify the same way."""

from __future__ import annotations

import asyncio
import dataclasses
import socket

import aiohttp
import pytest

from moltbot.config.model import ProviderConfig
from moltbot.providers.base import ErrorKind, TextDelta
from moltbot.providers.errors import parse_retry_after, transport_error
from moltbot.providers.openai_compat import OpenAICompatProvider
from moltbot.providers.scrub import MAX_MESSAGE_CHARS, Scrubber, provider_secrets
from tests.fake_upstreams import FakeUpstream, provider_config
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
    assert len(str(long_error)) == MAX_MESSAGE_CHARS and str(long_error).endswith("x…")
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


@pytest.mark.parametrize("where", ["status", "stream"])
async def test_a_key_at_the_cut_is_masked_before_the_message_is_shortened(
    any_up: FakeUpstream, where: str
) -> None:
    # The old order (cut at 300, then mask) left the key's first half in the message.
    message = "x" * (300 - 20) + f" {API_KEY} " + "y" * 500
    if where == "status":
        any_up.status(401, body={"error": {"message": message}})
    else:
        any_up.error_frame(message, after_chunks=1)
    async with provider_for(any_up) as provider:
        _, error = await collect_error(provider.stream(make_request()))
    text = str(error)
    assert "***" in text and len(text) <= MAX_MESSAGE_CHARS
    assert not any(API_KEY[i : i + 6] in text for i in range(len(API_KEY) - 5))


async def test_configured_header_values_and_url_secrets_are_masked(
    any_up: FakeUpstream,
) -> None:
    headers = {"X-Custom-Auth": "Token hdr-SECRET-1234", "X-Org": "org-SECRET-5678"}
    config = provider_config(any_up, api_key=API_KEY, headers=headers)
    base = config.base_url + "?api-version=2024&api-key=q-SECRET-9012"
    config = dataclasses.replace(config, base_url=base)
    echoed = " ".join([*headers.values(), "hdr-SECRET-1234", "q-SECRET-9012"])
    any_up.status(400, body={"error": {"message": f"you sent: {echoed}; api-version=2024"}})
    async with provider_for(any_up, config=config) as provider:
        _, error = await collect_error(provider.stream(make_request()))
        assert "SECRET" not in repr(provider)
    assert "SECRET" not in str(error)
    assert "api-version=2024" in str(error)  # not a secret: kept
    sent = any_up.requests[0]
    assert sent.path == any_up.wire.chat_path  # the query stays at the end of the URL
    assert sent.query == "api-version=2024&api-key=q-SECRET-9012"
    assert sent.headers["X-Org"] == "org-SECRET-5678"


def test_scrubber_masks_every_form_and_leaves_short_values() -> None:
    scrub = Scrubber(["key/with+plus", "clé-secrète", "1", "true"])
    text = 'HTTP 401: key/with+plus key%2Fwith%2Bplus {"k": "cl\\u00e9-secr\\u00e8te"} true'
    assert scrub.text(text) == 'HTTP 401: *** *** {"k": "***"} true'


def test_provider_secrets_cover_headers_and_the_base_url() -> None:
    config = ProviderConfig(
        "p",
        "https://u:pw-123456@h.example/v1?api-version=1&sig=s1gnature",
        "openai-completions",
        "sk-key",
        headers=(("Authorization", "Bearer abcdef123"),),
    )
    assert provider_secrets(config) == [
        "sk-key",
        "Bearer abcdef123",
        "abcdef123",
        "u:pw-123456",
        "u",
        "pw-123456",
        "s1gnature",
    ]


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
