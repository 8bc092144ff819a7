"""Image attachments on the WebSocket `agent` and `chat.send` methods reach the model; bad ones
are INVALID_REQUEST and the connection stays usable."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from moltbot.client import GatewayClient, GatewayError
from tests.fake_upstreams import FakeAnthropic, FakeOpenAI
from tests.gateway.ws.conftest import OpenClient, StartWs
from tests.gateway.ws.wsutil import WAIT, collect_until, is_chat_end
from tests.images import IMAGES, b64, data_url, vision_config


def sent_images(up: FakeOpenAI) -> list[str]:
    """The image URLs of the last user message the upstream got."""
    content = up.requests[-1].messages[-1]["content"]
    assert isinstance(content, list), content
    return [p["image_url"]["url"] for p in content if p["type"] == "image_url"]


async def test_agent_takes_base64_and_data_url_attachments(
    state_dir: Path, start_ws: StartWs, open_client: OpenClient, up: FakeOpenAI
) -> None:
    client = await open_client(await start_ws(vision_config(state_dir, up)))
    attachments = [
        {
            "type": "image",
            "mimeType": "image/png",
            "fileName": "a.png",
            "content": b64(IMAGES["image/png"]),
        },
        {"content": data_url("image/webp")},  # type and mimeType are optional with a data URL
    ]
    result = await client.request(
        "agent",
        {"message": "what are these", "idempotencyKey": "img-1", "attachments": attachments},
        expect_final=True,
        timeout=WAIT,
    )
    assert result["status"] == "ok", result
    assert sent_images(up) == [data_url("image/png"), data_url("image/webp")]
    [text] = [p["text"] for p in up.requests[-1].messages[-1]["content"] if p["type"] == "text"]
    assert text.endswith("] what are these")  # the timestamp envelope, then the message
    assert up.refusals == []


async def test_chat_send_takes_an_image_alone_and_history_shows_it(
    state_dir: Path, start_ws: StartWs, open_client: OpenClient, up: FakeOpenAI
) -> None:
    client = await open_client(await start_ws(vision_config(state_dir, up)))
    jpeg = {"type": "image", "mimeType": "image/jpeg", "content": b64(IMAGES["image/jpeg"])}
    params = {"sessionKey": "main", "message": "", "idempotencyKey": "c-img", "attachments": [jpeg]}
    assert (await client.request("chat.send", params, timeout=WAIT))["status"] == "started"
    events = await collect_until(client, is_chat_end("c-img"))
    assert events[-1].payload["state"] == "final", events[-1].payload
    assert sent_images(up) == [data_url("image/jpeg")]
    history = await client.request("chat.history", {"sessionKey": "main"}, timeout=WAIT)
    assert history["messages"][0]["content"] == [
        {"type": "image", "mimeType": "image/jpeg", "size": len(IMAGES["image/jpeg"])}
    ]


async def test_an_attachment_reaches_an_anthropic_model(
    state_dir: Path, start_ws: StartWs, open_client: OpenClient
) -> None:
    async with FakeAnthropic() as up:
        client = await open_client(await start_ws(vision_config(state_dir, up)))
        gif = {"mimeType": "image/gif", "content": b64(IMAGES["image/gif"])}
        result = await client.request(
            "agent",
            {"message": "and this?", "idempotencyKey": "img-a", "attachments": [gif]},
            expect_final=True,
            timeout=WAIT,
        )
        assert result["status"] == "ok", result
        blocks = up.requests[-1].messages[-1]["content"]
        assert blocks[-1] == {
            "type": "image",
            "source": {
                "type": "base64",
                "media_type": "image/gif",
                "data": b64(IMAGES["image/gif"]),
            },
        }
        assert up.refusals == []


BAD: list[tuple[str, Any, str]] = [
    ("broken-base64", {"mimeType": "image/png", "content": "iVBOR$$w0K"}, "base64"),
    ("unpadded-base64", {"mimeType": "image/png", "content": "iVBORw0KGgo"}, "base64"),
    ("no-mime-type", {"content": b64(IMAGES["image/png"])}, "unsupported image type"),
    ("bmp", {"mimeType": "image/bmp", "content": b64(b"BM\x00\x00")}, "unsupported image type"),
    ("pdf", {"mimeType": "application/pdf", "content": b64(b"%PDF-1.4")}, "unsupported image type"),
    ("file-type", {"type": "file", "mimeType": "text/plain", "content": b64(b"hi")}, "only image"),
    ("bmp-data-url", {"content": "data:image/bmp;base64," + b64(b"BM\x00\x00")}, "unsupported"),
    ("non-base64-data-url", {"content": "data:image/png,%89PNG"}, "base64"),
    ("no-content", {"type": "image", "mimeType": "image/png"}, "string content"),
    ("not-an-object", "iVBORw0KGgo=", "string content"),
]


@pytest.mark.parametrize("method", ["agent", "chat.send"])
@pytest.mark.parametrize(("attachment", "words"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
async def test_a_bad_attachment_is_invalid_request(
    state_dir: Path,
    start_ws: StartWs,
    open_client: OpenClient,
    up: FakeOpenAI,
    method: str,
    attachment: Any,
    words: str,
) -> None:
    client = await open_client(await start_ws(vision_config(state_dir, up)))
    good = {"mimeType": "image/png", "content": b64(IMAGES["image/png"])}
    with pytest.raises(GatewayError) as raised:
        await client.request(method, params(method, "bad", [good, attachment]), timeout=WAIT)
    assert raised.value.code == "INVALID_REQUEST"
    assert "attachments/1" in raised.value.message and words in raised.value.message
    assert up.requests == []
    await run_one(client, method, "after", [good])  # the connection goes on
    assert len(up.requests) == 1


@pytest.mark.parametrize("method", ["agent", "chat.send"])
async def test_too_many_attachments_and_a_text_only_model(
    state_dir: Path, start_ws: StartWs, open_client: OpenClient, up: FakeOpenAI, method: str
) -> None:
    gateway = await start_ws(vision_config(state_dir, up, images=False))
    client = await open_client(gateway)
    png = {"mimeType": "image/png", "content": b64(IMAGES["image/png"])}
    with pytest.raises(GatewayError) as raised:
        await client.request(method, params(method, "nine", [png] * 9), timeout=WAIT)
    assert raised.value.code == "INVALID_REQUEST" and "at most 8" in raised.value.message
    with pytest.raises(GatewayError) as raised:
        await client.request(method, params(method, "text-only", [png]), timeout=WAIT)
    assert raised.value.code == "INVALID_REQUEST"
    assert "does not take image input" in raised.value.message
    assert up.requests == []


def params(method: str, key: str, attachments: list[Any]) -> dict[str, Any]:
    if method == "agent":
        return {"message": "look", "idempotencyKey": key, "attachments": attachments}
    return {
        "sessionKey": "main",
        "message": "look",
        "idempotencyKey": key,
        "attachments": attachments,
    }


async def run_one(client: GatewayClient, method: str, key: str, attachments: list[Any]) -> None:
    if method == "agent":
        result = await client.request(
            "agent", params(method, key, attachments), expect_final=True, timeout=WAIT
        )
        assert result["status"] == "ok", result
        return
    await client.request(method, params(method, key, attachments), timeout=WAIT)
    events = await collect_until(client, is_chat_end(key))
    assert events[-1].payload["state"] == "final", events[-1].payload


def test_the_images_are_what_they_say() -> None:
    """The fixtures start as their formats do (the gateway checks type and base64 only)."""
    assert IMAGES["image/png"].startswith(b"\x89PNG\r\n\x1a\n")
    assert IMAGES["image/jpeg"].startswith(b"\xff\xd8\xff")
    assert IMAGES["image/gif"].startswith(b"GIF89a")
    assert IMAGES["image/webp"][8:12] == b"WEBP"
    assert base64.b64decode(b64(IMAGES["image/png"])) == IMAGES["image/png"]
