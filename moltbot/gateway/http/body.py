"""Reading a request's JSON body: size (aiohttp's client_max_size), encoding, syntax, Unicode."""

from __future__ import annotations

import json

from aiohttp import web

from moltbot.gateway.errors import InvalidRequest
from moltbot.gateway.http.protocol import reject_lone_surrogates


async def read_json(request: web.Request) -> object:
    raw = await request.read()  # over gateway.http.maxBodyBytes: aiohttp raises 413
    if not raw.strip():
        raise InvalidRequest("request body is empty; expected a JSON object")
    try:
        # Strict UTF-8 (JSON's only encoding on the wire; a leading BOM is tolerated). Given
        # bytes, json.loads would also guess UTF-16/32 and let encoded surrogates
        # (`\xed\xa0\x80`, CESU-8) through as text that nothing after it can encode.
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(
            f"request body is not valid UTF-8 (at byte {exc.start})", param="body"
        ) from None
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise InvalidRequest(f"invalid JSON body: {exc}") from None
    except RecursionError:  # nesting deeper than the parser's stack: not a request we take
        raise InvalidRequest("invalid JSON body: nested too deeply") from None
    if "\\ud" in text or "\\uD" in text:  # only escapes can carry lone surrogates now
        reject_lone_surrogates(body)
    return body
