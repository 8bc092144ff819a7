from __future__ import annotations

import pytest

from moltbot.content import assistant_text, user_text
from moltbot.providers.base import Finish, TextDelta, Usage
from moltbot.providers.echo import EchoProvider, word_chunks
from tests.providers.streams import collect, make_request, text_of


@pytest.mark.parametrize(
    "text",
    [
        "hello",
        "hello world",
        "  leading",
        "trailing  ",
        " a \n b\t c ",
        "   ",
        "",
        "日本語 テキスト",
    ],
)
def test_chunks_concatenate_to_the_text(text: str) -> None:
    assert "".join(word_chunks(text)) == text


def test_chunk_carries_the_whitespace_before_its_word() -> None:
    assert word_chunks(" a  b c ") == [" a", "  b", " c "]


async def test_echoes_the_last_user_message() -> None:
    history = (user_text("old question"), assistant_text("old answer"))
    items = await collect(EchoProvider().stream(make_request("Hi  there\n", history=history)))
    assert items == [
        TextDelta("Hi"),
        TextDelta("  there\n"),
        Usage(input_tokens=2 + 2 + 2, output_tokens=2),
        Finish("stop"),
    ]


async def test_usage_counts_system_and_all_messages() -> None:
    request = make_request("a b c", system="one two", history=(user_text("x"),))
    items = await collect(EchoProvider().stream(request))
    assert Usage(input_tokens=2 + 1 + 3, output_tokens=3) in items


async def test_is_deterministic() -> None:
    request = make_request("the same words every time")
    assert await collect(EchoProvider().stream(request)) == await collect(
        EchoProvider().stream(request)
    )


async def test_empty_message_gives_an_empty_reply() -> None:
    items = await collect(EchoProvider().stream(make_request("")))
    assert items == [Usage(0, 0), Finish("stop")]


@pytest.mark.parametrize(("limit", "text", "reason"), [(2, "a b", "stop"), (0, "a", "length")])
async def test_max_tokens_boundaries(limit: int, text: str, reason: str) -> None:
    items = await collect(EchoProvider().stream(make_request(text, max_tokens=limit)))
    assert items[-1] == Finish(reason)  # type: ignore[arg-type]


async def test_max_tokens_cuts_the_reply_with_length() -> None:
    items = await collect(EchoProvider().stream(make_request("one two three four", max_tokens=2)))
    assert text_of(items) == "one two"
    assert items[-2:] == [Usage(4, 2), Finish("length")]
