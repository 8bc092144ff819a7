"""http(s) image URLs of a request, fetched before its turn starts (when the config allows it).

The guarded fetcher (moltbot.net.fetch) refuses loopback, private, link-local and metadata
addresses, after DNS and on every redirect, unless `gateway.http.images.allowedHosts` names
them. All of a request's images share the request's image byte cap and one deadline.
"""

from __future__ import annotations

import asyncio

from moltbot.config.model import ImagesConfig
from moltbot.content import IMAGE_TYPES, ImagePart
from moltbot.gateway.errors import InvalidRequest
from moltbot.gateway.http.messages import MAX_IMAGE_BYTES, ImageUrl
from moltbot.images import ImageError, image_from_bytes
from moltbot.net.fetch import FetchPolicy, FetchRefused, fetch

MAX_FETCHED_IMAGE_BYTES = 10 * 1024 * 1024


async def fetch_images(
    urls: tuple[ImageUrl, ...], config: ImagesConfig, inline_bytes: int
) -> list[ImagePart]:
    """The images behind `urls`, in order; a refusal or failure is a 400 naming the part."""
    budget = MAX_IMAGE_BYTES - inline_bytes
    images: list[ImagePart] = []
    try:
        async with asyncio.timeout(config.timeout_seconds):
            for url in urls:
                image = await _fetch_one(url, config, budget)
                budget -= image.size
                images.append(image)
    except TimeoutError:
        raise InvalidRequest(
            f"fetching the request's images took longer than {config.timeout_seconds:g} s",
            param=urls[len(images)].param,
            code="image_fetch_failed",
        ) from None
    return images


async def _fetch_one(url: ImageUrl, config: ImagesConfig, budget: int) -> ImagePart:
    if budget <= 0:
        raise InvalidRequest(
            f"images may hold at most {MAX_IMAGE_BYTES} bytes per request", param=url.param
        )
    policy = FetchPolicy(
        max_bytes=min(MAX_FETCHED_IMAGE_BYTES, budget),
        timeout_seconds=config.timeout_seconds,
        allowed_hosts=config.allowed_hosts,
        allowed_content_types=IMAGE_TYPES,
    )
    try:
        fetched = await fetch(url.url, policy)
        return image_from_bytes(fetched.content_type, fetched.body)
    except (FetchRefused, ImageError) as exc:
        raise InvalidRequest(str(exc), param=url.param, code="image_fetch_failed") from None
