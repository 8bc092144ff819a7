"""Images sent inline (base64, or a `data:` URL holding base64): checked once, for every
transport. The bytes are decoded to be checked and counted, and kept as the base64 text the
providers want."""

from __future__ import annotations

import base64
import binascii
import json
import re

from moltbot.content import IMAGE_TYPES, ImagePart

_DATA_URL = re.compile(r"^data:([^;,]*)((?:;[^;,]*)*),", re.IGNORECASE)


class ImageError(ValueError):
    """Why an image was refused; the message is meant for the client."""


def image_from_data_url(url: str) -> ImagePart:
    match = _DATA_URL.match(url)
    if match is None:
        raise ImageError("expected a data: URL (data:image/png;base64,...)")
    if "base64" not in match[2].lower().split(";"):
        raise ImageError("image data URLs must be base64-encoded")
    return image_from_base64(match[1], url[match.end() :])


def image_from_base64(media_type: str, data: str) -> ImagePart:
    media_type = media_type.strip().lower()
    if media_type not in IMAGE_TYPES:
        raise ImageError(
            f"unsupported image type {json.dumps(media_type)}; use one of {', '.join(IMAGE_TYPES)}"
        )
    try:
        decoded = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ImageError("the image's base64 data is broken") from None
    if not decoded:
        raise ImageError("the image is empty")
    # Kept as sent when it is canonical base64 (it is what the providers take).
    canonical = data if len(data) % 4 == 0 else base64.b64encode(decoded).decode()
    return ImagePart(media_type, len(decoded), canonical)


def image_from_bytes(media_type: str, data: bytes) -> ImagePart:
    """A fetched image, its type as the server said it."""
    return image_from_base64(media_type, base64.b64encode(data).decode())
