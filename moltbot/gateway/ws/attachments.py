"""`attachments` of the `agent` and `chat.send` methods: images, as the reference sends them
(`{type?, mimeType?, fileName?, content: base64 | data URL}`), into image parts of the turn.

Unlike the reference, an attachment that is not an image is refused rather than dropped, so the
client knows the model never saw it. The 512 KiB frame limit bounds their size on the wire.
"""

from __future__ import annotations

from typing import Any

from moltbot.content import ImagePart
from moltbot.gateway.http.messages import MAX_IMAGES
from moltbot.gateway.ws.params import invalid_params
from moltbot.images import ImageError, image_from_base64, image_from_data_url


def parse_attachments(method: str, attachments: list[Any] | None) -> tuple[ImagePart, ...]:
    if not attachments:
        return ()
    if len(attachments) > MAX_IMAGES:
        raise invalid_params(method, f"at /attachments: at most {MAX_IMAGES} attachments")
    return tuple(_image(method, index, raw) for index, raw in enumerate(attachments))


def _image(method: str, index: int, raw: Any) -> ImagePart:
    where = f"at /attachments/{index}"
    if not isinstance(raw, dict) or not isinstance(raw.get("content"), str):
        raise invalid_params(method, f"{where}: must be an object with a string content")
    kind, mime = raw.get("type"), raw.get("mimeType")
    if kind not in (None, "image") or (mime is not None and not isinstance(mime, str)):
        raise invalid_params(method, f"{where}: only image attachments are supported")
    content: str = raw["content"]
    try:
        if content.startswith("data:"):
            return image_from_data_url(content)
        return image_from_base64(mime or "", content)
    except ImageError as exc:
        raise invalid_params(method, f"{where}: {exc}") from None
