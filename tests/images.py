"""Small images of each supported type, and the ways clients send them."""

from __future__ import annotations

import base64
import struct
import zlib
from pathlib import Path
from typing import Any

from moltbot.config.model import Config, ModelConfig
from tests.conftest import make_config
from tests.fake_upstreams import FakeUpstream, provider_config


def _png() -> bytes:
    """A real 1x1 PNG (one red pixel)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


# The gateway checks the type and the base64, not the pixels; these start as the real formats do.
IMAGES: dict[str, bytes] = {
    "image/png": _png(),
    "image/jpeg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xff\xd9",
    "image/gif": base64.b64decode("R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw=="),
    "image/webp": (
        b"RIFF\x1a\x00\x00\x00WEBPVP8L\x0d\x00\x00\x00/\x00\x00\x00"
        b"\x10\x07\x10\x11\x11\x88\x88\xfe\x07\x00"
    ),
}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def data_url(media_type: str, data: bytes | None = None) -> str:
    return f"data:{media_type};base64,{b64(IMAGES[media_type] if data is None else data)}"


def image_part(url: str, **extra: Any) -> dict[str, Any]:
    """An OpenAI `image_url` content part."""
    return {"type": "image_url", "image_url": {"url": url, **extra}}


def vision_config(
    state_dir: Path, up: FakeUpstream, *, images: bool = True, **options: Any
) -> Config:
    """Provider `up` with model `m1`, which takes images (or, `images=False`, text only)."""
    inputs = ("text", "image") if images else ("text",)
    model = ModelConfig(id="m1", name="m1", input=inputs)
    providers = (provider_config(up, "up", models=(model,)),)
    return make_config(state_dir, providers=providers, primary="up/m1", **options)
