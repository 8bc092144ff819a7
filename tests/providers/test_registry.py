from __future__ import annotations

import pytest

from moltbot.config.model import (
    ECHO_MODEL_REF,
    ApiKind,
    ModelConfig,
    ModelsConfig,
    ProviderConfig,
)
from moltbot.providers.anthropic import AnthropicProvider
from moltbot.providers.base import ProviderError
from moltbot.providers.echo import EchoProvider
from moltbot.providers.openai_compat import OpenAICompatProvider
from moltbot.providers.registry import ProviderRegistry
from tests.fake_upstreams import FakeAnthropic, FakeOpenAI, provider_config
from tests.providers.streams import collect, make_request, text_of


def config(
    name: str, api: ApiKind = "openai-completions", models: tuple[str, ...] = ()
) -> ProviderConfig:
    # Never contacted: these tests only look the providers up.
    unused_url = "http://127.0.0.1:9/v1"
    return ProviderConfig(name, unused_url, api, models=tuple(ModelConfig(m, m) for m in models))


def test_nothing_configured_means_offline_echo() -> None:
    registry = ProviderRegistry.from_config(ModelsConfig())
    assert registry.default_ref() == ECHO_MODEL_REF
    assert registry.uses_offline_default
    provider, model = registry.resolve(ECHO_MODEL_REF)
    assert isinstance(provider, EchoProvider) and model == "echo"


def test_default_ref_is_first_provider_with_models() -> None:
    models = ModelsConfig((config("empty"), config("Main", models=("gpt-x", "gpt-y"))))
    registry = ProviderRegistry.from_config(models)
    assert registry.default_ref() == "main/gpt-x"
    assert not registry.uses_offline_default
    # Looked up lower-cased ("Main" is found as "main"); the offline provider is always there.
    assert [registry.resolve(ref)[0].name for ref in ("empty/a", "main/b", "builtin/echo")] == [
        "empty",
        "Main",
        "builtin",
    ]


def test_api_selects_the_provider_class() -> None:
    models = ModelsConfig((config("o"), config("a", "anthropic-messages")))
    registry = ProviderRegistry.from_config(models)
    assert isinstance(registry.resolve("o/m")[0], OpenAICompatProvider)
    assert isinstance(registry.resolve("a/m")[0], AnthropicProvider)


def test_resolve_splits_at_the_first_slash_and_lowercases_the_provider() -> None:
    registry = ProviderRegistry.from_config(ModelsConfig((config("or"),)))
    provider, model = registry.resolve("OR/meta-llama/Llama-3-8B")
    assert provider.name == "or" and model == "meta-llama/Llama-3-8B"


def test_unknown_provider_names_the_configured_ones() -> None:
    registry = ProviderRegistry.from_config(ModelsConfig((config("a"), config("b"))))
    with pytest.raises(ProviderError) as caught:
        registry.resolve("x/y")
    assert caught.value.kind == "config"
    assert str(caught.value) == 'unknown model provider "x" in "x/y"; configured: a, b, builtin'


@pytest.mark.parametrize("ref", ["a", "a/", ""])
def test_ref_without_model_id_is_a_config_error(ref: str) -> None:
    registry = ProviderRegistry.from_config(ModelsConfig((config("a"),)))
    with pytest.raises(ProviderError) as caught:
        registry.resolve(ref)
    assert caught.value.kind == "config"


def test_builtin_name_is_reserved() -> None:
    with pytest.raises(ProviderError):
        ProviderRegistry.from_config(ModelsConfig((config("Builtin"),)))


async def test_streams_through_resolved_providers_and_closes_them() -> None:
    async with FakeOpenAI(reply="from openai") as o, FakeAnthropic(reply="from claude") as a:
        models = ModelsConfig((provider_config(o, "o"), provider_config(a, "a")))
        registry = ProviderRegistry.from_config(models, read_timeout=5)
        for ref, expected in (("o/m1", "from openai"), ("a/m1", "from claude")):
            provider, model = registry.resolve(ref)
            assert text_of(await collect(provider.stream(make_request(model=model)))) == expected
        await registry.close()
    assert [r.json["model"] for r in (*o.requests, *a.requests)] == ["m1", "m1"]
