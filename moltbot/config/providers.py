"""The `models` section: model providers and the models they serve."""

from __future__ import annotations

from typing import cast

from moltbot.config.checks import (
    Context,
    Node,
    as_choice,
    as_list,
    as_node,
    as_string,
    as_tuple,
    as_url,
    given,
    objects,
    report_duplicates,
)
from moltbot.config.model import ApiKind, ModelConfig, ModelsConfig, ProviderConfig
from moltbot.config.wording import quote

RESERVED_PROVIDER = "builtin"  # owns the offline `builtin/echo` model
API_KINDS = ("openai-completions", "anthropic-messages")
PROVIDER_KEYS = ("baseUrl", "apiKey", "api", "headers", "models")
# The last five are part of the reference schema; we accept them so shared files load, but the
# gateway does not use them.
MODEL_KEYS = (
    "id",
    "name",
    "contextWindow",
    "maxTokens",
    "input",
    "api",
    "reasoning",
    "cost",
    "compat",
    "headers",
)
DEFAULT_MAX_TOKENS = 8192
MODEL_INPUTS = ("text", "image")


def models_section(node: Node) -> ModelsConfig:
    node.check_keys(("mode", "providers"))
    node.choice("mode", ("merge", "replace"))
    return ModelsConfig(**given(providers=node.section("providers", _providers)))


def _providers(node: Node) -> tuple[ProviderConfig, ...]:
    """Provider names are case-insensitive: stored lower-cased, and must stay unique that way."""
    first_seen: dict[str, str] = {}
    providers: list[ProviderConfig] = []
    for raw_name, value in node.data.items():
        path = node.at(raw_name)
        name = _provider_name(str(raw_name), path, node.ctx)
        provider = _provider_at(value, path, node.ctx, name)  # checked even under a bad name
        if name is None:
            continue
        if name in first_seen:
            also = first_seen[name]
            node.ctx.problem(path, f"duplicate provider name {quote(name)} (also {also})")
            continue
        first_seen[name] = path
        if provider is not None:
            providers.append(provider)
    return tuple(providers)


def _provider_name(raw: str, path: str, ctx: Context) -> str | None:
    name = raw.strip().lower()
    if name == RESERVED_PROVIDER:
        reason = "is reserved for the offline echo model; pick another provider name"
        ctx.problem(path, f'"{RESERVED_PROVIDER}" {reason}')
        return None
    if not name or "/" in name or any(char.isspace() for char in name):
        ctx.problem(path, f'expected a provider name without "/" or spaces, got {quote(raw)}')
        return None
    return name


def _provider_at(value: object, path: str, ctx: Context, name: str | None) -> ProviderConfig | None:
    node = as_node(value, path, ctx)
    return _provider(node, name) if node is not None else None


def _provider(node: Node, name: str | None) -> ProviderConfig | None:
    node.check_keys(PROVIDER_KEYS)
    base_url = node.get("baseUrl", as_url, required=True)
    api = node.choice("api", API_KINDS, required=True)
    fields = given(
        api_key=node.string("apiKey", secret=True),
        headers=node.section("headers", _headers),
        models=node.get("models", _models),
    )
    if name is None or base_url is None or api is None:
        return None
    return ProviderConfig(name=name, base_url=base_url, api=cast(ApiKind, api), **fields)


def _headers(node: Node) -> tuple[tuple[str, str], ...]:
    """Header values often carry credentials, so they are checked as secrets (never echoed)."""
    pairs = [
        (str(key), as_string(value, node.at(key), node.ctx, secret=True))
        for key, value in node.data.items()
    ]
    return tuple((key, value) for key, value in pairs if value is not None)


def _models(value: object, path: str, ctx: Context) -> tuple[ModelConfig, ...] | None:
    entries = as_list(value, path, ctx, objects(_model))
    if entries is None:
        return None
    report_duplicates([(where, model.id) for where, model in entries], "model id", ctx)
    return tuple(model for _, model in entries)


def _model(node: Node) -> ModelConfig | None:
    node.check_keys(MODEL_KEYS)
    model_id = node.string("id", required=True)
    name = node.string("name", required=True)
    context_window = node.integer("contextWindow")
    max_tokens = node.integer("maxTokens")
    inputs = node.get("input", _inputs)
    if model_id is None or name is None:
        return None
    if max_tokens is None and context_window is not None:
        max_tokens = min(DEFAULT_MAX_TOKENS, context_window)  # a small model caps its output
    fields = given(context_window=context_window, max_tokens=max_tokens, input=inputs)
    return ModelConfig(id=model_id, name=name, **fields)


def _inputs(value: object, path: str, ctx: Context) -> tuple[str, ...] | None:
    """What the model takes: "text", and "image" for vision models."""

    def check(item: object, where: str, ctx: Context) -> str | None:
        return as_choice(item, where, ctx, MODEL_INPUTS)

    return as_tuple(value, path, ctx, check)
