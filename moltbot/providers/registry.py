"""Model refs ("provider/model") to provider instances.

Built once from the `models` config; owns every provider and so every upstream session.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from moltbot.config.model import ECHO_MODEL_REF, ApiKind, ModelsConfig, ProviderConfig
from moltbot.providers.anthropic import AnthropicProvider
from moltbot.providers.base import Provider, ProviderError
from moltbot.providers.echo import ECHO_PROVIDER_NAME, EchoProvider
from moltbot.providers.openai_compat import OpenAICompatProvider

ProviderFactory = Callable[[ProviderConfig, float, float], Provider]


def _openai(config: ProviderConfig, connect_timeout: float, read_timeout: float) -> Provider:
    return OpenAICompatProvider(config, connect_timeout=connect_timeout, read_timeout=read_timeout)


def _anthropic(config: ProviderConfig, connect_timeout: float, read_timeout: float) -> Provider:
    return AnthropicProvider(config, connect_timeout=connect_timeout, read_timeout=read_timeout)


def _echo(config: ProviderConfig, connect_timeout: float, read_timeout: float) -> Provider:
    return EchoProvider(config.name.lower())


PROVIDER_FACTORIES: dict[ApiKind, ProviderFactory] = {
    "openai-completions": _openai,
    "anthropic-messages": _anthropic,
    "builtin-echo": _echo,
}


class ProviderRegistry:
    def __init__(
        self,
        providers: dict[str, Provider],
        default_ref: str = ECHO_MODEL_REF,
        image_models: frozenset[str] = frozenset(),
    ) -> None:
        """`providers` by lower-cased name; the builtin echo provider is always added.
        `image_models`: the refs whose config says they take images (echo always does)."""
        self._providers = {**providers, ECHO_PROVIDER_NAME: EchoProvider()}
        self._default_ref = default_ref
        self._image_models = image_models | {ECHO_MODEL_REF}

    @classmethod
    def from_config(
        cls,
        models: ModelsConfig,
        *,
        connect_timeout: float = 10.0,
        read_timeout: float = 300.0,
    ) -> ProviderRegistry:
        providers = {
            config.name.lower(): _build(config, connect_timeout, read_timeout)
            for config in models.providers
        }
        image_models = frozenset(
            f"{config.name.lower()}/{model.id}"
            for config in models.providers
            for model in config.models
            if "image" in model.input
        )
        return cls(providers, _first_model_ref(models), image_models)

    def resolve(self, ref: str) -> tuple[Provider, str]:
        """The provider and the provider's own model id for "provider/model"."""
        provider_name, _, model = ref.partition("/")
        provider = self._providers.get(provider_name.strip().lower())
        if provider is None:
            configured = ", ".join(self._providers)
            raise ProviderError(
                "config",
                f'unknown model provider "{provider_name}" in "{ref}"; configured: {configured}',
            )
        if not model:
            raise ProviderError("config", f'model ref "{ref}" lacks a model id ("provider/model")')
        return provider, model

    def takes_images(self, ref: str) -> bool:
        provider, _, model = ref.partition("/")
        return f"{provider.strip().lower()}/{model}" in self._image_models

    def default_ref(self) -> str:
        return self._default_ref

    @property
    def uses_offline_default(self) -> bool:
        """True when no configured model exists and runs fall back to the echo model."""
        return self._default_ref == ECHO_MODEL_REF

    async def close(self) -> None:
        # return_exceptions: one provider failing to close must not leak the others' sessions.
        await asyncio.gather(*(p.close() for p in self._providers.values()), return_exceptions=True)


def _build(config: ProviderConfig, connect_timeout: float, read_timeout: float) -> Provider:
    if config.name.lower() == ECHO_PROVIDER_NAME:
        raise ProviderError(
            "config", f'provider name "{config.name}" is reserved for the echo model'
        )
    factory = PROVIDER_FACTORIES.get(config.api)
    if factory is None:
        raise ProviderError("config", f'provider "{config.name}": unsupported api "{config.api}"')
    return factory(config, connect_timeout, read_timeout)


def _first_model_ref(models: ModelsConfig) -> str:
    for config in models.providers:
        if config.models:
            return f"{config.name.lower()}/{config.models[0].id}"
    return ECHO_MODEL_REF
