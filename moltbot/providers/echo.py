"""The built-in offline model: `builtin/echo` repeats the last user message.

It lets the gateway run, and tests exercise the whole pipeline, with no network and no API key.
Everything about it is deterministic and it never sleeps.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

from moltbot.providers.base import Finish, ModelRequest, StreamItem, TextDelta, Usage

ECHO_PROVIDER_NAME = "builtin"
ECHO_MODEL_ID = "echo"

# One chunk per word, carrying the whitespace *before* it; whitespace after the last word
# rides with the last word, and whitespace-only text is one chunk. So "".join(chunks) is
# exactly the text.
_CHUNK = re.compile(r"\s*\S+\s*$|\s*\S+|\s+")


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
        chunks = word_chunks(_last_user_message(request))
        limit = request.sampling.max_tokens
        sent = chunks if limit is None else chunks[: max(0, limit)]
        for chunk in sent:
            yield TextDelta(chunk)
        yield Usage(input_tokens=_prompt_words(request), output_tokens=word_count("".join(sent)))
        yield Finish("length" if len(sent) < len(chunks) else "stop")

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
