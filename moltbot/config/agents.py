"""Agent ids, model refs and the `agents` section of the config.

`normalize_agent_id` is public: session keys, directories and RPC handlers must all agree on the
canonical form of an id.
"""

from __future__ import annotations

import re
import zoneinfo

from moltbot.config.checks import (
    Context,
    Node,
    as_list,
    as_path,
    as_string,
    as_tuple,
    given,
    objects,
    report_duplicates,
)
from moltbot.config.model import AgentConfig, AgentDefaults, AgentsConfig, Identity, ModelChoice
from moltbot.config.tools import agent_tools_section
from moltbot.config.wording import quote

DEFAULT_AGENT_ID = "main"
MAX_AGENT_ID_LENGTH = 64
_CANONICAL_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_INVALID_ID_RUN = re.compile(r"[^a-z0-9_-]+")

DEFAULTS_KEYS = (
    "model",
    "workspace",
    "skipBootstrap",
    "bootstrapMaxChars",
    "userTimezone",
    "timeoutSeconds",
    "maxConcurrent",
    "maxToolRounds",
)
AGENT_KEYS = ("id", "default", "name", "workspace", "model", "identity", "tools")
IDENTITY_KEYS = ("name", "theme", "emoji", "avatar")


def normalize_agent_id(raw: str) -> str:
    """Trimmed, lower-cased, invalid character runs turned into `-`; `main` if nothing is left."""
    text = raw.strip().lower()
    if _CANONICAL_ID.match(text):
        return text
    text = _INVALID_ID_RUN.sub("-", text).strip("-")
    return text[:MAX_AGENT_ID_LENGTH] or DEFAULT_AGENT_ID


def agents_section(node: Node) -> AgentsConfig:
    node.check_keys(("defaults", "list"))
    return AgentsConfig(
        **given(
            defaults=node.section("defaults", _defaults_section),
            list=node.get("list", _agent_list),
        )
    )


def as_model_ref(value: object, path: str, ctx: Context) -> str | None:
    """`provider/model`, with the provider part lower-cased like provider names are."""
    text = as_string(value, path, ctx)
    if text is None:
        return None
    provider, slash, model = text.strip().partition("/")
    if slash and provider.strip() and model.strip():
        return f"{provider.strip().lower()}/{model.strip()}"
    hint = 'the provider name, a "/", then the model id, e.g. "openai/gpt-4o"'
    ctx.problem(path, f'expected a model ref like "provider/model", got {quote(text)} ({hint})')
    return None


def as_model_choice(value: object, path: str, ctx: Context) -> ModelChoice | None:
    """A plain string is the primary model; an object may also list fallbacks."""
    if isinstance(value, str):
        primary = as_model_ref(value, path, ctx)
        return ModelChoice(primary=primary) if primary else None
    if not isinstance(value, dict):
        ctx.mismatch(path, "a model ref string or an object {primary, fallbacks}", value)
        return None
    node = Node(value, path, ctx)
    node.check_keys(("primary", "fallbacks"))
    fallbacks = node.get("fallbacks", _model_refs)
    return ModelChoice(primary=node.get("primary", as_model_ref), fallbacks=fallbacks)


def _model_refs(value: object, path: str, ctx: Context) -> tuple[str, ...] | None:
    return as_tuple(value, path, ctx, as_model_ref)


def as_timezone(value: object, path: str, ctx: Context) -> str | None:
    name = as_string(value, path, ctx)
    if name is None:
        return None
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        ctx.problem(path, f'expected an IANA time zone such as "Europe/Berlin", got {quote(name)}')
        return None
    return name


def _defaults_section(node: Node) -> AgentDefaults:
    node.check_keys(DEFAULTS_KEYS)
    if node.boolean("skipBootstrap") is not None:  # a reference key: accepted, but inert here
        node.ctx.notices.append(
            "agents.defaults.skipBootstrap has no effect: this gateway never writes workspace "
            "template files"
        )
    return AgentDefaults(
        **given(
            model=node.get("model", as_model_choice),
            workspace=node.get("workspace", as_path),
            bootstrap_max_chars=node.integer("bootstrapMaxChars"),
            user_timezone=node.get("userTimezone", as_timezone),
            timeout_seconds=node.integer("timeoutSeconds"),
            max_concurrent=node.integer("maxConcurrent"),
            max_tool_rounds=node.integer("maxToolRounds", maximum=100),
        )
    )


def _agent_list(value: object, path: str, ctx: Context) -> tuple[AgentConfig, ...] | None:
    entries = as_list(value, path, ctx, objects(_agent_entry))
    if entries is None:
        return None
    report_duplicates([(where, agent.id) for where, agent in entries], "agent id", ctx)
    defaults = [agent.id for _, agent in entries if agent.default]
    if len(defaults) > 1:
        marked = ", ".join(defaults)
        ctx.notices.append(f'several agents are marked default ({marked}); "{defaults[0]}" wins')
    return tuple(agent for _, agent in entries)


def _agent_entry(node: Node) -> AgentConfig | None:
    node.check_keys(AGENT_KEYS)
    raw_id = node.string("id", required=True)
    fields = given(
        default=node.boolean("default"),
        name=node.string("name"),
        workspace=node.get("workspace", as_path),
        model=node.get("model", as_model_choice),
        identity=node.section("identity", _identity_section),
        tools=node.section("tools", agent_tools_section),
    )
    if raw_id is None:
        return None
    agent_id = normalize_agent_id(raw_id)
    if agent_id != raw_id:
        notice = f"{node.at('id')}: agent id {quote(raw_id)} is used as {quote(agent_id)}"
        node.ctx.notices.append(notice)
    return AgentConfig(id=agent_id, **fields)


def _identity_section(node: Node) -> Identity:
    node.check_keys(IDENTITY_KEYS)
    return Identity(**{key: node.string(key) for key in IDENTITY_KEYS})
