"""The built-in offline model: `builtin/echo` repeats the last user message.

It lets the gateway run, and tests exercise the whole pipeline, with no network and no API key.
Everything about it is deterministic; it never waits on anything (it only steps aside).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

from moltbot.providers.base import Finish, ModelRequest, StreamItem, TextDelta, Usage

ECHO_PROVIDER_NAME = "builtin"
ECHO_MODEL_ID = "echo"

# One chunk per word, carrying the whitespace *before* it; whitespace after the last word
# rides with the last word, and whitespace-only text is one chunk. So "".join(chunks) is
# exactly the text.
_CHUNK = re.compile(r"\s*\S+\s*$|\s*\S+|\s+")


# The echo never waits for anything; it steps aside this often so one long answer cannot hold
# the event loop for the whole of its run buffer.
YIELD_EVERY = 64


def word_chunks(text: str) -> list[str]:
    return _CHUNK.findall(text)


def word_count(text: str) -> int:
    return len(text.split())


class EchoProvider:
    def __init__(self, name: str = ECHO_PROVIDER_NAME) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"EchoProvider(name={self.name!r})"

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamItem]:
        # Chunk by chunk, not a list of them all: a long message is 100,000 words.
        limit = request.sampling.max_tokens
        sent = words = 0
        cut = False
        for match in _CHUNK.finditer(_last_user_message(request)):
            if limit is not None and sent >= limit:
                cut = True
                break
            sent += 1
            words += 1 if match[0].strip() else 0
            yield TextDelta(match[0])
            if sent % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # a real model waits on the network: let others run
        yield Usage(input_tokens=_prompt_words(request), output_tokens=words)
        yield Finish("length" if cut else "stop")

    async def close(self) -> None:
        return None


def _last_user_message(request: ModelRequest) -> str:
    """Its text, and a note for each image, so a first run shows what reached the model."""
    for message in reversed(request.messages):
        if message.role == "user":
            notes = [f"[image {i.media_type}, {i.size} bytes]" for i in message.images]
            return " ".join([message.text, *notes]) if notes else message.text
    return ""


def _prompt_words(request: ModelRequest) -> int:
    return word_count(request.system) + sum(word_count(m.text) for m in request.messages)
