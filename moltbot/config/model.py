"""The typed, immutable configuration the rest of the gateway reads.

`moltbot.config.load_config()` builds a `Config` from the JSON5/YAML file, the environment and the
CLI; after that nothing touches raw dicts. Field defaults here are the documented defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

AuthMode = Literal["token", "password"]
ApiKind = Literal["openai-completions", "anthropic-messages", "builtin-echo"]
LogLevel = Literal["silent", "fatal", "error", "warn", "info", "debug", "trace"]
LogFormat = Literal["auto", "pretty", "json"]
ToolProfile = Literal["minimal", "coding", "full"]
ExecSecurity = Literal["deny", "allowlist", "full"]
ExecAsk = Literal["off", "on-miss", "always"]
ExecSandbox = Literal["auto", "bwrap", "off"]
EventLoop = Literal["auto", "asyncio", "uvloop"]
StoreBackend = Literal["sqlite", "postgres"]

DEFAULT_PORT = 18789
DEFAULT_MAX_BODY_BYTES = 20 * 1024 * 1024
ECHO_MODEL_REF = "builtin/echo"


@dataclass(frozen=True)
class RateLimitConfig:
    """Failed-auth limit per client IP: `max_attempts` failures in `window_ms` lock out for
    `lockout_ms`."""

    max_attempts: int = 10
    window_ms: int = 60_000
    lockout_ms: int = 300_000
    exempt_loopback: bool = True


@dataclass(frozen=True)
class AuthConfig:
    mode: AuthMode = "token"
    # Secrets stay out of reprs, so a logged config or a traceback never shows them.
    token: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    rate_limit: RateLimitConfig = field(default_factory=RateLimitConfig)

    @property
    def secret(self) -> str | None:
        """The shared secret clients must present in the active mode."""
        return self.token if self.mode == "token" else self.password


@dataclass(frozen=True)
class ImagesConfig:
    """Image URLs in requests: refused unless `allow_url`; then fetched from public addresses
    only, or from the hosts listed (an intranet)."""

    allow_url: bool = False
    allowed_hosts: tuple[str, ...] = ()
    timeout_seconds: float = 10.0


@dataclass(frozen=True)
class HttpConfig:
    chat_completions_enabled: bool = False
    responses_enabled: bool = False
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    images: ImagesConfig = field(default_factory=ImagesConfig)


@dataclass(frozen=True)
class ControlUiConfig:
    """The web chat page. `base_path` is "" (the page at "/") or a normalised path such as "/ui"
    (the page at "/ui/")."""

    enabled: bool = True
    base_path: str = ""


@dataclass(frozen=True)
class MetricsConfig:
    # True: GET /metrics needs no token (for a scraper on a private network).
    public: bool = False


@dataclass(frozen=True)
class LimitsConfig:
    """Bounds on sockets, below HTTP: open connections in all and per client address, and how
    long a client may take to send a request's headers and its body."""

    max_connections: int = 1000
    max_connections_per_ip: int = 256
    headers_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 30.0


@dataclass(frozen=True)
class GatewayConfig:
    port: int = DEFAULT_PORT
    # "loopback" (127.0.0.1), "lan" (0.0.0.0) or an explicit IP address.
    bind: str = "loopback"
    auth: AuthConfig = field(default_factory=AuthConfig)
    trusted_proxies: tuple[str, ...] = ()
    # Browser origins allowed besides the gateway's own, normalised: "https://chat.example.com".
    allowed_origins: tuple[str, ...] = ()
    # Host names accepted besides localhost, 127.0.0.1 and [::1], lower case, without a port.
    allowed_hosts: tuple[str, ...] = ()
    http: HttpConfig = field(default_factory=HttpConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    control_ui: ControlUiConfig = field(default_factory=ControlUiConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    # After SIGTERM: this long still serving with /readyz at 503, so load balancers move away
    # before the port closes; then in-flight work gets shutdown_grace_seconds.
    shutdown_delay_seconds: float = 0.0
    shutdown_grace_seconds: float = 10.0
    # Worker processes sharing the port (SO_REUSEPORT); more than one needs PostgreSQL.
    workers: int = 1
    # "auto": uvloop where it is installed, else asyncio's own loop.
    event_loop: EventLoop = "auto"

    @property
    def host(self) -> str:
        """The address to listen on."""
        return {"loopback": "127.0.0.1", "lan": "0.0.0.0"}.get(self.bind, self.bind)

    @property
    def client_host(self) -> str:
        """The address a client on this machine connects to."""
        return "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host


@dataclass(frozen=True)
class ModelConfig:
    id: str
    name: str
    context_window: int = 200_000
    max_tokens: int = 8192
    input: tuple[str, ...] = ("text",)  # "image" too for a model that takes images


@dataclass(frozen=True)
class ProviderConfig:
    name: str
    base_url: str
    api: ApiKind
    api_key: str | None = field(default=None, repr=False)
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    models: tuple[ModelConfig, ...] = ()


@dataclass(frozen=True)
class ModelsConfig:
    providers: tuple[ProviderConfig, ...] = ()


@dataclass(frozen=True)
class ModelChoice:
    """A primary model ref ("provider/model") and the refs to fall back to, in order."""

    primary: str | None = None
    # None: not set here (inherit); () : explicitly no fallbacks.
    fallbacks: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Identity:
    name: str | None = None
    theme: str | None = None
    emoji: str | None = None
    avatar: str | None = None


@dataclass(frozen=True)
class ToolRules:
    """Which of the agent's own tools a level (`tools`, `agents.list[].tools`) lets through.
    Each level only narrows what the one above it allows (moltbot.tools.policy)."""

    profile: ToolProfile | None = None
    allow: tuple[str, ...] | None = None  # None: no allowlist at this level
    deny: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExecConfig:
    """The `exec` tool: who decides what runs (security, ask), and how it runs."""

    security: ExecSecurity = "allowlist"
    ask: ExecAsk = "on-miss"
    allowlist: tuple[str, ...] = ()  # binary paths, path globs ("/usr/bin/*") or names on PATH
    timeout_seconds: float = 60.0  # a call's default; the model may ask for up to the max
    max_timeout_seconds: float = 600.0
    max_output_bytes: int = 100_000  # head and tail kept, the middle dropped
    approval_timeout_seconds: float = 120.0
    sandbox: ExecSandbox = "auto"
    network: bool = False  # inside the sandbox; direct mode cannot take the network away


@dataclass(frozen=True)
class WebFetchConfig:
    allowed_hosts: tuple[str, ...] = ()  # names, *.domain, IPs or networks let through
    max_bytes: int = 2_000_000
    timeout_seconds: float = 15.0
    max_chars: int = 50_000


@dataclass(frozen=True)
class ToolsConfig:
    rules: ToolRules = field(default_factory=ToolRules)
    exec: ExecConfig = field(default_factory=ExecConfig)
    web_fetch: WebFetchConfig = field(default_factory=WebFetchConfig)


@dataclass(frozen=True)
class AgentDefaults:
    model: ModelChoice = field(default_factory=ModelChoice)
    workspace: Path | None = None
    bootstrap_max_chars: int = 20_000
    user_timezone: str | None = None
    timeout_seconds: int = 600
    max_concurrent: int = 4
    max_tool_rounds: int = 8


@dataclass(frozen=True)
class AgentConfig:
    id: str
    default: bool = False
    name: str | None = None
    workspace: Path | None = None
    model: ModelChoice | None = None
    identity: Identity | None = None
    tools: ToolRules | None = None


@dataclass(frozen=True)
class AgentsConfig:
    defaults: AgentDefaults = field(default_factory=AgentDefaults)
    list: tuple[AgentConfig, ...] = ()


@dataclass(frozen=True)
class PostgresConfig:
    # postgres://user:password@host:port/db; kept out of reprs, since it may hold a password.
    dsn: str = field(repr=False)
    pool_min: int = 1
    pool_max: int = 10


@dataclass(frozen=True)
class SessionConfig:
    # SQLite file holding every session and transcript; default <stateDir>/sessions.sqlite.
    store: Path | None = None
    # Set when `session.store.backend` is "postgres": the store is that database instead.
    postgres: PostgresConfig | None = None

    @property
    def backend(self) -> StoreBackend:
        return "sqlite" if self.postgres is None else "postgres"


@dataclass(frozen=True)
class LoggingConfig:
    level: LogLevel = "info"
    format: LogFormat = "auto"


@dataclass(frozen=True)
class Config:
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    agents: AgentsConfig = field(default_factory=AgentsConfig)
    session: SessionConfig = field(default_factory=SessionConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    tools: ToolsConfig = field(default_factory=ToolsConfig)
    # Where this config came from and where state lives (resolved at load).
    state_dir: Path = field(default_factory=lambda: Path.home() / ".moltbot")
    config_path: Path | None = None
    # Every file the config was read from: config_path (if it exists), then its $includes.
    config_files: tuple[Path, ...] = ()

    @property
    def session_store_path(self) -> Path:
        """The SQLite file (also when the backend is PostgreSQL: it is simply not used)."""
        return self.session.store or self.state_dir / "sessions.sqlite"

    @property
    def session_store_location(self) -> str:
        """Where sessions live, safe to show: the SQLite path, or the DSN without password."""
        if self.session.postgres is None:
            return str(self.session_store_path)
        return dsn_without_password(self.session.postgres.dsn)


def dsn_without_password(dsn: str) -> str:
    """postgres://user:secret@host/db?password=x -> postgres://user:***@host/db?password=***."""
    parts = urlsplit(dsn)
    userinfo, at, host = parts.netloc.rpartition("@")
    netloc = f"{userinfo.partition(':')[0]}:***@{host}" if at and ":" in userinfo else parts.netloc
    query = "&".join(
        "password=***" if item.lower().startswith("password=") else item
        for item in parts.query.split("&")
    )
    shown = f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if parts.query else "")
    return shown + (f"#{parts.fragment}" if parts.fragment else "")
