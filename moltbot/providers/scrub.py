"""Keeping a provider's credentials out of the error text that leaves it.

Upstreams echo what they were sent ("Incorrect API key provided: sk-...", a proxy dumping the
request headers), and that text reaches the client, the logs and the stored history. Every
error leaving a network provider goes through `Scrubber.error`, which masks the provider's
secrets first and only then shortens the message: shortening first could cut a secret in half
and leave the half that no longer matches.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from urllib.parse import quote

from moltbot.config.model import ProviderConfig
from moltbot.config.redact import url_secrets
from moltbot.providers.base import ProviderError

REDACTED = "***"
# Messages are cut to this length, after scrubbing.
MAX_MESSAGE_CHARS = 400
# Text cut earlier than that (an in-stream error, a snippet of bad data) is cut at this length:
# far past MAX_MESSAGE_CHARS, so a secret such a cut halves ends up past the final cut too.
MAX_SCAN_CHARS = 16 * 1024
# Configured values shorter than this are not treated as secrets: masking "1" or "true" would
# mangle every message ("HTTP 4***") and hide nothing a credential would be.
MIN_SECRET_CHARS = 6


class Scrubber:
    __slots__ = ("_forms",)

    def __init__(self, secrets: Iterable[str]) -> None:
        long_enough = (secret for secret in secrets if len(secret) >= MIN_SECRET_CHARS)
        forms = {form for secret in long_enough for form in _forms(secret)}
        # Longest first, so a secret that contains another is masked whole.
        self._forms = tuple(sorted(forms, key=len, reverse=True))

    @classmethod
    def for_provider(cls, config: ProviderConfig) -> Scrubber:
        return cls(provider_secrets(config))

    def text(self, text: str) -> str:
        for form in self._forms:
            if form in text:
                text = text.replace(form, REDACTED)
        return text

    def error(self, error: ProviderError) -> ProviderError:
        """The same error, or a copy with its secrets masked and then its message shortened."""
        message = str(error)
        clean = shorten(self.text(message))
        if clean == message:
            return error
        return ProviderError(error.kind, clean, status=error.status, retry_after=error.retry_after)


def provider_secrets(config: ProviderConfig) -> list[str]:
    """The API key, every configured header value (and the credential after an auth scheme
    such as `Bearer`), and the secrets in the base URL (user info, `?api-key=...`)."""
    secrets = [config.api_key] if config.api_key else []
    for _, value in config.headers:
        secrets.append(value)
        scheme, _, credential = value.partition(" ")
        if credential and scheme.isalpha():
            secrets.append(credential.strip())
    return secrets + url_secrets(config.base_url)


def shorten(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _forms(secret: str) -> set[str]:
    """The secret as an upstream might echo it: as is, JSON-escaped, percent-encoded."""
    return {secret, json.dumps(secret)[1:-1], quote(secret, safe="")}
