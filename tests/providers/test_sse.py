from __future__ import annotations

import pytest

from moltbot.providers.base import Finish, ProviderError, TextDelta, Usage
from moltbot.providers.openai_compat import ChatChunkDecoder
from moltbot.providers.sse import SSEFrame, SSEParser

CHUNK = b'data: {"choices":[{"index":0,"delta":{"content":"%s"},"finish_reason":null}]}\n\n'
FINISH = b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'


def feed_bytewise(parser: SSEParser, data: bytes) -> list[SSEFrame]:
    return [frame for i in range(len(data)) for frame in parser.feed(data[i : i + 1])]


def test_frames_split_across_chunks_are_reassembled() -> None:
    frames = feed_bytewise(SSEParser(), b"event: a\ndata: one\n\ndata: two\n\n")
    assert frames == [SSEFrame("a", "one"), SSEFrame("", "two")]


def test_crlf_comments_and_unknown_fields_are_tolerated() -> None:
    data = b": keep-alive\r\nid: 7\r\nretry: 100\r\ndata: x\r\n\r\n"
    assert SSEParser().feed(data) == [SSEFrame("", "x")]


def test_multiple_data_lines_join_with_newline() -> None:
    assert SSEParser().feed(b"data: a\ndata:b\n\n") == [SSEFrame("", "a\nb")]


def test_utf8_character_split_between_chunks() -> None:
    encoded = "data: héllo ✓\n\n".encode()
    assert feed_bytewise(SSEParser(), encoded) == [SSEFrame("", "héllo ✓")]


def test_last_frame_without_blank_line_is_flushed_at_end() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: [DONE]") == []
    assert parser.finish() == [SSEFrame("", "[DONE]")]


def test_frame_without_data_is_not_dispatched() -> None:
    assert SSEParser().feed(b"event: ping\n\n") == []


def test_openai_decoder_bytewise() -> None:
    decoder = ChatChunkDecoder("up")
    body = CHUNK % b"Hel" + CHUNK % b"lo" + FINISH + b"data: [DONE]\n\n"
    items = [item for i in range(len(body)) for item in decoder.feed(body[i : i + 1])]
    assert items == [TextDelta("Hel"), TextDelta("lo"), Finish("stop")]
    assert decoder.done


def test_openai_decoder_accepts_finish_reason_without_done() -> None:
    decoder = ChatChunkDecoder("up")
    items = [*decoder.feed(CHUNK % b"a" + FINISH), *decoder.finish()]
    assert items == [TextDelta("a"), Finish("stop")]


def test_openai_decoder_end_without_finish_is_a_connection_error() -> None:
    decoder = ChatChunkDecoder("up")
    assert list(decoder.feed(CHUNK % b"a")) == [TextDelta("a")]
    with pytest.raises(ProviderError) as caught:
        list(decoder.finish())
    assert caught.value.kind == "connection"


def test_openai_decoder_ignores_frames_after_done() -> None:
    decoder = ChatChunkDecoder("up")
    items = list(decoder.feed(FINISH + b"data: [DONE]\n\n" + CHUNK % b"late"))
    assert items == [Finish("stop")]


def test_openai_usage_counts_cached_tokens_apart() -> None:
    usage = b'{"choices":[],"usage":{"prompt_tokens":10,"completion_tokens":3,'
    usage += b'"prompt_tokens_details":{"cached_tokens":4}}}'
    decoder = ChatChunkDecoder("up")
    items = list(decoder.feed(FINISH + b"data: " + usage + b"\n\ndata: [DONE]\n\n"))
    assert items == [Usage(6, 3, cache_read_tokens=4), Finish("stop")]


def test_openai_decoder_yields_text_before_a_failing_frame() -> None:
    decoder = ChatChunkDecoder("up")
    items = decoder.feed(CHUNK % b"kept" + b"data: {broken\n\n")
    assert next(items) == TextDelta("kept")
    with pytest.raises(ProviderError) as caught:
        next(items)
    assert caught.value.kind == "malformed"
