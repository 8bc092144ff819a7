"""Strict validation: the raw config tree in, a typed `Config` out, or every problem at once.

File keys are camelCase; the dataclasses use snake_case. Unknown keys are errors everywhere except
in maps whose keys are names (providers, headers, env).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from moltbot.config.agents import agents_section
from moltbot.config.checks import (
    Context,
    Node,
    as_host_list,
    as_node,
    as_number,
    as_path,
    as_string,
    as_tuple,
    given,
)
from moltbot.config.errors import ConfigError
from moltbot.config.model import (
    AuthConfig,
    Config,
    ControlUiConfig,
    GatewayConfig,
    HttpConfig,
    ImagesConfig,
    LoggingConfig,
    MetricsConfig,
    PostgresConfig,
    RateLimitConfig,
    SessionConfig,
)
from moltbot.config.network import as_host_names, as_origin_list, limits_section
from moltbot.config.providers import models_section
from moltbot.config.tools import tools_section
from moltbot.config.wording import describe, quote

TOP_KEYS = ("gateway", "models", "agents", "session", "logging", "tools", "env", "meta")
GATEWAY_KEYS = (
    "mode",
    "port",
    "bind",
    "auth",
    "trustedProxies",
    "allowedOrigins",
    "allowedHosts",
    "http",
    "limits",
    "controlUi",
    "metrics",
    "shutdownDelaySeconds",
    "shutdownGraceSeconds",
    "workers",
    "eventLoop",
)
# Keys people put directly under `gateway` that belong one level down.
GATEWAY_MOVED = {"token": "gateway.auth.token", "password": "gateway.auth.password"}
AUTH_KEYS = ("mode", "token", "password", "rateLimit")
RATE_LIMIT_KEYS = ("maxAttempts", "windowMs", "lockoutMs", "exemptLoopback")
BIND_NAMES = ("loopback", "lan")
UNSUPPORTED_BINDS = ("tailnet", "auto", "custom")
LOG_LEVELS = ("silent", "fatal", "error", "warn", "info", "debug", "trace")
LOG_FORMATS = ("auto", "pretty", "json")
# A UI base path: segments of URL-safe characters, no dot segments, nothing to escape.
_BASE_PATH = re.compile(r"(/[A-Za-z0-9_~-][A-Za-z0-9._~-]*)+")
BASE_PATH_MAX_CHARS = 200
# Paths the gateway serves itself: the page cannot live at or under them.
RESERVED_PATHS = ("/v1", "/ws", "/healthz", "/readyz", "/metrics")
EVENT_LOOPS = ("auto", "asyncio", "uvloop")
MAX_WORKERS = 64
STORE_BACKENDS = ("sqlite", "postgres")
SQLITE_STORE_KEYS = ("backend", "path")
POSTGRES_STORE_KEYS = ("backend", "dsn", "pool")
POOL_KEYS = ("min", "max")
MAX_POOL_SIZE = 1000
DSN_SCHEMES = ("postgres", "postgresql")


@dataclass(frozen=True)
class Validated:
    config: Config
    # Things worth logging that are not errors (e.g. an agent id that was normalised).
    notices: tuple[str, ...]


def validate_config(raw: object, *, base_dir: Path, home: Path, source: Path | None) -> Validated:
    """Check `raw` against the schema. Relative paths are anchored at `base_dir`; problems are
    raised together as one `ConfigError` naming `source`."""
    ctx = Context(base_dir=base_dir, home=home)
    root = as_node(raw, "", ctx)
    config = _root_section(root) if root is not None else Config()
    if not ctx.problems:
        _check_model_refs(config, ctx)
        if problem := workers_problem(config.gateway.workers, config.session.backend):
            ctx.problem("gateway.workers", problem)
    if ctx.problems:
        raise ConfigError.invalid(source, ctx.problems)
    return Validated(config=config, notices=tuple(ctx.notices))


def _check_model_refs(config: Config, ctx: Context) -> None:
    """Every model ref must name a configured provider (or the built-in one): otherwise every
    run of that agent would fail, long after start-up."""
    known = [p.name for p in config.models.providers] + ["builtin"]
    for path, ref in _model_refs(config):
        provider = ref.split("/", 1)[0]
        if provider not in known:
            ctx.problem(
                path,
                f'unknown provider "{provider}" in {quote(ref)}; configured: {", ".join(known)}',
            )


def _model_refs(config: Config) -> list[tuple[str, str]]:
    defaults = config.agents.defaults.model
    choices = [("agents.defaults.model", defaults)] + [
        (f"agents.list[{i}].model", agent.model)
        for i, agent in enumerate(config.agents.list)
        if agent.model is not None
    ]
    refs = []
    for path, choice in choices:
        if choice.primary:
            refs.append((f"{path}.primary", choice.primary))
        refs += [(f"{path}.fallbacks[{i}]", ref) for i, ref in enumerate(choice.fallbacks or ())]
    return refs


def workers_problem(workers: int, backend: str) -> str | None:
    """Why `workers` cannot run on `backend`, or None. One SQLite file cannot be shared: each
    process orders a session's turns and caches its history on its own."""
    if workers > 1 and backend == "sqlite":
        return (
            f"{workers} workers need the postgres session store: with SQLite the gateway is one "
            "process, since per-process turn ordering and caches cannot be shared through one file"
        )
    return None


def bind_error(value: object) -> str | None:
    """Why `value` is not a valid bind setting, or None when it is."""
    if isinstance(value, str) and (value in BIND_NAMES or _is_ip(value)):
        return None
    got = quote(value) if isinstance(value, str) else describe(value)
    message = f'expected "loopback", "lan" or an IP address, got {got}'
    if value in UNSUPPORTED_BINDS:
        message += " (tailnet, auto and custom binds are not supported by this gateway)"
    return message


def _root_section(node: Node) -> Config:
    node.check_keys(TOP_KEYS)
    node.section("env", _env_block)  # already applied by the loader; only its shape is checked
    return Config(
        **given(
            gateway=node.section("gateway", _gateway_section),
            models=node.section("models", models_section),
            agents=node.section("agents", agents_section),
            session=node.section("session", _session_section),
            logging=node.section("logging", _logging_section),
            tools=node.section("tools", tools_section),
        )
    )


def _env_block(node: Node) -> None:
    _env_values(node, skip="vars")
    node.section("vars", _env_values)


def _env_values(node: Node, skip: str | None = None) -> None:
    for key, value in node.data.items():
        if key != skip:
            as_string(value, node.at(key), node.ctx, secret=True)  # values are often API keys


def _gateway_section(node: Node) -> GatewayConfig:
    node.check_keys(GATEWAY_KEYS, moved=GATEWAY_MOVED)
    node.choice("mode", ("local", "remote"))  # checked, but only the CLI cares about it
    return GatewayConfig(
        **given(
            port=node.integer("port", maximum=65535),
            bind=node.get("bind", _as_bind),
            auth=node.section("auth", _auth_section),
            trusted_proxies=node.get("trustedProxies", _as_ip_list),
            allowed_origins=node.get("allowedOrigins", as_origin_list),
            allowed_hosts=node.get("allowedHosts", as_host_names),
            http=node.section("http", _http_section),
            limits=node.section("limits", limits_section),
            control_ui=node.section("controlUi", _control_ui_section),
            metrics=node.section("metrics", _metrics_section),
            shutdown_delay_seconds=node.get("shutdownDelaySeconds", as_number),
            shutdown_grace_seconds=node.get("shutdownGraceSeconds", as_number),
            workers=node.integer("workers", maximum=MAX_WORKERS),
            event_loop=node.choice("eventLoop", EVENT_LOOPS),
        )
    )


def _auth_section(node: Node) -> AuthConfig:
    node.check_keys(AUTH_KEYS)
    return AuthConfig(
        **given(
            mode=node.choice("mode", ("token", "password")),
            token=node.string("token", secret=True),
            password=node.string("password", secret=True),
            rate_limit=node.section("rateLimit", _rate_limit_section),
        )
    )


def _rate_limit_section(node: Node) -> RateLimitConfig:
    node.check_keys(RATE_LIMIT_KEYS)
    return RateLimitConfig(
        **given(
            max_attempts=node.integer("maxAttempts"),
            window_ms=node.integer("windowMs"),
            lockout_ms=node.integer("lockoutMs"),
            exempt_loopback=node.boolean("exemptLoopback"),
        )
    )


def _http_section(node: Node) -> HttpConfig:
    node.check_keys(("maxBodyBytes", "endpoints", "images"))
    endpoints = node.section("endpoints", _endpoints_section) or {}
    return HttpConfig(
        **given(
            max_body_bytes=node.integer("maxBodyBytes"),
            images=node.section("images", _images_section),
            **endpoints,
        )
    )


def _images_section(node: Node) -> ImagesConfig:
    node.check_keys(("allowUrl", "allowedHosts", "timeoutSeconds"))
    return ImagesConfig(
        **given(
            allow_url=node.boolean("allowUrl"),
            allowed_hosts=node.get("allowedHosts", as_host_list),
            timeout_seconds=node.get("timeoutSeconds", as_positive_number),
        )
    )


def as_positive_number(value: object, path: str, ctx: Context) -> float | None:
    number = as_number(value, path, ctx)
    if number is not None and number <= 0:
        ctx.mismatch(path, "a number above 0", value)
        return None
    return number


def _endpoints_section(node: Node) -> dict[str, bool | None]:
    """The OpenAI-compatible endpoints, each off unless `enabled: true`."""
    node.check_keys(("chatCompletions", "responses"))
    return {
        "chat_completions_enabled": node.section("chatCompletions", _enabled_flag),
        "responses_enabled": node.section("responses", _enabled_flag),
    }


def _enabled_flag(node: Node) -> bool | None:
    node.check_keys(("enabled",))
    return node.boolean("enabled")


def _control_ui_section(node: Node) -> ControlUiConfig:
    node.check_keys(("enabled", "basePath"))
    return ControlUiConfig(
        **given(enabled=node.boolean("enabled"), base_path=node.get("basePath", _as_base_path))
    )


def _metrics_section(node: Node) -> MetricsConfig:
    node.check_keys(("public",))
    return MetricsConfig(**given(public=node.boolean("public")))


def _as_base_path(value: object, path: str, ctx: Context) -> str | None:
    """ "" or "/" is the root; "/ui" and "/ui/" both mean "/ui"."""
    if not isinstance(value, str):
        ctx.mismatch(path, 'a path such as "/ui"', value)
        return None
    text = value.rstrip("/") if value != "/" else ""
    problem = base_path_error(text)
    if problem is not None:
        ctx.problem(path, f"{problem}, got {quote(value)}")
        return None
    return text


def base_path_error(text: str) -> str | None:
    if text == "":
        return None
    if len(text) > BASE_PATH_MAX_CHARS or not _BASE_PATH.fullmatch(text):
        return (
            'expected a path such as "/ui": letters, digits, "-", "_", "." and "~" between '
            "slashes, no dot segments"
        )
    if any(text == p or text.startswith(p + "/") for p in RESERVED_PATHS):
        return f"expected a path outside the gateway's own ({', '.join(RESERVED_PATHS)})"
    return None


def _session_section(node: Node) -> SessionConfig:
    node.check_keys(("store",))
    store = node.data.get("store")
    if not isinstance(store, dict):  # the plain form: the SQLite file's path
        return SessionConfig(**given(store=node.get("store", as_path)))
    store_node = Node(store, node.at("store"), node.ctx)
    backend = store_node.choice("backend", STORE_BACKENDS, required=True)
    if backend is None:
        return SessionConfig()
    if backend == "postgres":
        store_node.check_keys(POSTGRES_STORE_KEYS)
        return SessionConfig(postgres=_postgres_store(store_node))
    store_node.check_keys(SQLITE_STORE_KEYS)
    return SessionConfig(**given(store=store_node.get("path", as_path)))


def _postgres_store(node: Node) -> PostgresConfig | None:
    dsn = node.get("dsn", _as_dsn, required=True)
    pool = node.section("pool", _pool_section) or {}
    if dsn is None:
        return None
    config = PostgresConfig(dsn=dsn, **pool)
    if config.pool_min > config.pool_max:
        node.ctx.problem(
            node.at("pool"), f"min ({config.pool_min}) must not exceed max ({config.pool_max})"
        )
    return config


def _pool_section(node: Node) -> dict[str, int]:
    node.check_keys(POOL_KEYS)
    return given(
        pool_min=node.integer("min", minimum=0, maximum=MAX_POOL_SIZE),
        pool_max=node.integer("max", maximum=MAX_POOL_SIZE),
    )  # type: ignore[return-value]


def _as_dsn(value: object, path: str, ctx: Context) -> str | None:
    """A postgres:// or postgresql:// URL; a bad one is reported without its text (it may
    carry a password)."""
    text = as_string(value, path, ctx, secret=True)
    if text is None:
        return None
    scheme = text.partition("://")[0].lower()
    if "://" not in text or scheme not in DSN_SCHEMES:
        ctx.problem(path, "expected a postgres:// or postgresql:// URL")
        return None
    return text.strip()


def _logging_section(node: Node) -> LoggingConfig:
    node.check_keys(("level", "format"))
    return LoggingConfig(
        **given(level=node.choice("level", LOG_LEVELS), format=node.choice("format", LOG_FORMATS))
    )


def _as_bind(value: object, path: str, ctx: Context) -> str | None:
    problem = bind_error(value)
    if problem:
        ctx.problem(path, problem)
        return None
    return str(value)


def _as_ip_list(value: object, path: str, ctx: Context) -> tuple[str, ...] | None:
    return as_tuple(value, path, ctx, _as_ip)


def _as_ip(value: object, path: str, ctx: Context) -> str | None:
    if isinstance(value, str) and _is_ip(value):
        return value
    got = quote(value) if isinstance(value, str) else describe(value)
    ctx.problem(path, f'expected an IP address such as "10.0.0.2" (no ranges), got {got}')
    return None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
