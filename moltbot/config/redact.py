"""The effective config as a JSON-able dict in the file's camelCase shape, secrets masked.

Used by `moltbot config show`; the output is itself a valid config file (secrets aside), which
keeps the shape honest.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus, urlsplit, urlunsplit

from moltbot.config.model import (
    AgentConfig,
    AgentDefaults,
    AgentsConfig,
    Config,
    GatewayConfig,
    ModelChoice,
    ModelConfig,
    ProviderConfig,
    dsn_without_password,
)

MASK = "***"
# Header and URL query parameter names that usually carry credentials (`api-key`, `sig` of a
# signed URL, `access_token`, ...); masking a harmless one costs nothing.
SECRET_NAME = re.compile(r"auth|key|token|cookie|secret|pass|session|sig|credential", re.I)


def redacted(config: Config) -> dict[str, object]:
    return {
        "gateway": _gateway(config.gateway),
        "models": {"providers": {p.name: _provider(p) for p in config.models.providers}},
        "agents": _agents(config.agents),
        "session": {"store": _store(config)},
        "logging": {"level": config.logging.level, "format": config.logging.format},
    }


def _gateway(gateway: GatewayConfig) -> dict[str, object]:
    auth, limit, limits = gateway.auth, gateway.auth.rate_limit, gateway.limits
    rate_limit = {
        "maxAttempts": limit.max_attempts,
        "windowMs": limit.window_ms,
        "lockoutMs": limit.lockout_ms,
        "exemptLoopback": limit.exempt_loopback,
    }
    secrets = {"token": _mask(auth.token), "password": _mask(auth.password)}
    return {
        "port": gateway.port,
        "bind": gateway.bind,
        "auth": {"mode": auth.mode, **_present(secrets), "rateLimit": rate_limit},
        "trustedProxies": list(gateway.trusted_proxies),
        "allowedOrigins": list(gateway.allowed_origins),
        "allowedHosts": list(gateway.allowed_hosts),
        "http": {
            "maxBodyBytes": gateway.http.max_body_bytes,
            "endpoints": {
                "chatCompletions": {"enabled": gateway.http.chat_completions_enabled},
                "responses": {"enabled": gateway.http.responses_enabled},
            },
            "images": {
                "allowUrl": gateway.http.images.allow_url,
                "allowedHosts": list(gateway.http.images.allowed_hosts),
                "timeoutSeconds": gateway.http.images.timeout_seconds,
            },
        },
        "limits": {
            "maxConnections": limits.max_connections,
            "maxConnectionsPerIp": limits.max_connections_per_ip,
            "headersTimeoutSeconds": limits.headers_timeout_seconds,
            "bodyTimeoutSeconds": limits.body_timeout_seconds,
        },
        "controlUi": {
            "enabled": gateway.control_ui.enabled,
            "basePath": gateway.control_ui.base_path,
        },
        "metrics": {"public": gateway.metrics.public},
        "shutdownDelaySeconds": gateway.shutdown_delay_seconds,
        "shutdownGraceSeconds": gateway.shutdown_grace_seconds,
        "workers": gateway.workers,
        "eventLoop": gateway.event_loop,
    }


def _store(config: Config) -> object:
    postgres = config.session.postgres
    if postgres is None:
        return str(config.session_store_path)
    return {
        "backend": "postgres",
        "dsn": dsn_without_password(postgres.dsn),
        "pool": {"min": postgres.pool_min, "max": postgres.pool_max},
    }


def _provider(provider: ProviderConfig) -> dict[str, object]:
    headers = {
        name: MASK if SECRET_NAME.search(name) else value for name, value in provider.headers
    }
    return _present(
        {
            "baseUrl": masked_url(provider.base_url),
            "api": provider.api,
            "apiKey": _mask(provider.api_key),
            "headers": headers or None,
            "models": [_model(model) for model in provider.models],
        }
    )


def _model(model: ModelConfig) -> dict[str, object]:
    return {
        "id": model.id,
        "name": model.name,
        "contextWindow": model.context_window,
        "maxTokens": model.max_tokens,
        "input": list(model.input),
    }


def _agents(agents: AgentsConfig) -> dict[str, object]:
    return {"defaults": _defaults(agents.defaults), "list": [_agent(a) for a in agents.list]}


def _defaults(defaults: AgentDefaults) -> dict[str, object]:
    return _present(
        {
            "model": _choice(defaults.model),
            "workspace": _text(defaults.workspace),
            "bootstrapMaxChars": defaults.bootstrap_max_chars,
            "userTimezone": defaults.user_timezone,
            "timeoutSeconds": defaults.timeout_seconds,
            "maxConcurrent": defaults.max_concurrent,
        }
    )


def _agent(agent: AgentConfig) -> dict[str, object]:
    identity = agent.identity
    return _present(
        {
            "id": agent.id,
            "default": agent.default,
            "name": agent.name,
            "workspace": _text(agent.workspace),
            "model": _choice(agent.model) if agent.model else None,
            "identity": _present(vars(identity)) if identity else None,
        }
    )


def _choice(choice: ModelChoice) -> dict[str, object]:
    fallbacks = list(choice.fallbacks) if choice.fallbacks is not None else None
    return _present({"primary": choice.primary, "fallbacks": fallbacks})


def _present(fields: dict[str, object]) -> dict[str, object]:
    """Unset (None) fields are left out, as they would be in a hand-written file."""
    return {key: value for key, value in fields.items() if value is not None}


def _mask(secret: str | None) -> str | None:
    return MASK if secret else None


def _text(value: object | None) -> str | None:
    return None if value is None else str(value)


def masked_url(url: str) -> str:
    """`url` with its user info and the values of secret-looking query parameters as ***."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rpartition('@')[2]}"
    query = "&".join(_masked_param(param) for param in parts.query.split("&"))
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def url_secrets(url: str) -> list[str]:
    """What `masked_url` hides, both as written in the URL and percent-decoded."""
    parts = urlsplit(url)
    found = []
    if "@" in parts.netloc:
        userinfo = parts.netloc.rpartition("@")[0]
        found += [userinfo, *userinfo.split(":", 1)]
    for param in parts.query.split("&"):
        name, _, value = param.partition("=")
        if value and SECRET_NAME.search(unquote_plus(name)):
            found += [value, unquote_plus(value)]
    return [secret for secret in dict.fromkeys(found) if secret]


def _masked_param(param: str) -> str:
    # Split by hand rather than parse_qsl + urlencode: the rest of the query stays as written.
    name, equals, value = param.partition("=")
    if value and SECRET_NAME.search(unquote_plus(name)):
        return f"{name}{equals}{MASK}"
    return param
