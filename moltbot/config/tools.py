"""The `tools` section and the per-agent `agents.list[].tools` rules."""

from __future__ import annotations

from moltbot.config.checks import (
    Context,
    Node,
    as_host_list,
    as_number,
    as_string,
    as_tuple,
    given,
)
from moltbot.config.model import ExecConfig, ToolRules, ToolsConfig, WebFetchConfig
from moltbot.config.wording import quote
from moltbot.tools.policy import PROFILES, expand

RULE_KEYS = ("profile", "allow", "deny")
TOOLS_KEYS = (*RULE_KEYS, "exec", "web")
EXEC_KEYS = (
    "security",
    "ask",
    "allowlist",
    "timeoutSeconds",
    "maxTimeoutSeconds",
    "maxOutputBytes",
    "approvalTimeoutSeconds",
    "sandbox",
    "network",
)
FETCH_KEYS = ("allowedHosts", "maxBytes", "timeoutSeconds", "maxChars")
SECURITY_MODES = ("deny", "allowlist", "full")
ASK_MODES = ("off", "on-miss", "always")
SANDBOX_MODES = ("auto", "bwrap", "off")


def tools_section(node: Node) -> ToolsConfig:
    node.check_keys(TOOLS_KEYS)
    return ToolsConfig(
        **given(
            rules=tool_rules(node),
            exec=node.section("exec", _exec_section),
            web_fetch=node.section("web", _web_section),
        )
    )


def agent_tools_section(node: Node) -> ToolRules:
    """`agents.list[].tools`: the same rules, no settings (those are the gateway's)."""
    node.check_keys(RULE_KEYS)
    return tool_rules(node)


def tool_rules(node: Node) -> ToolRules:
    return ToolRules(
        **given(
            profile=node.choice("profile", tuple(PROFILES)),
            allow=node.get("allow", _tool_entries),
            deny=node.get("deny", _tool_entries),
        )
    )


def _tool_entries(value: object, path: str, ctx: Context) -> tuple[str, ...] | None:
    return as_tuple(value, path, ctx, _tool_entry)


def _tool_entry(value: object, path: str, ctx: Context) -> str | None:
    text = as_string(value, path, ctx)
    if text is None:
        return None
    try:
        expand(text)
    except ValueError as exc:
        ctx.problem(path, str(exc))
        return None
    return text.strip().lower()


def _exec_section(node: Node) -> ExecConfig:
    node.check_keys(EXEC_KEYS)
    config = ExecConfig(
        **given(
            security=node.choice("security", SECURITY_MODES),
            ask=node.choice("ask", ASK_MODES),
            allowlist=node.get("allowlist", _allowlist),
            timeout_seconds=node.get("timeoutSeconds", _positive),
            max_timeout_seconds=node.get("maxTimeoutSeconds", _positive),
            max_output_bytes=node.integer("maxOutputBytes", minimum=1000, maximum=10_000_000),
            approval_timeout_seconds=node.get("approvalTimeoutSeconds", _positive),
            sandbox=node.choice("sandbox", SANDBOX_MODES),
            network=node.boolean("network"),
        )
    )
    if config.timeout_seconds > config.max_timeout_seconds:
        node.ctx.problem(
            node.at("timeoutSeconds"),
            f"must not be above maxTimeoutSeconds ({config.max_timeout_seconds:g})",
        )
    return config


def _allowlist(value: object, path: str, ctx: Context) -> tuple[str, ...] | None:
    return as_tuple(value, path, ctx, _allowlist_entry)


def _allowlist_entry(value: object, path: str, ctx: Context) -> str | None:
    """An absolute binary path (globs allowed: "/usr/bin/*") or a bare name found on PATH."""
    text = as_string(value, path, ctx)
    if text is None:
        return None
    text = text.strip()
    if text.startswith("/") or "/" not in text:
        return text
    ctx.problem(path, f"expected an absolute path or a bare command name, got {quote(text)}")
    return None


def _web_section(node: Node) -> WebFetchConfig | None:
    node.check_keys(("fetch",))
    return node.section("fetch", _fetch_section)


def _fetch_section(node: Node) -> WebFetchConfig:
    node.check_keys(FETCH_KEYS)
    return WebFetchConfig(
        **given(
            allowed_hosts=node.get("allowedHosts", as_host_list),
            max_bytes=node.integer("maxBytes", maximum=100_000_000),
            timeout_seconds=node.get("timeoutSeconds", _positive),
            max_chars=node.integer("maxChars", minimum=100, maximum=10_000_000),
        )
    )


def _positive(value: object, path: str, ctx: Context) -> float | None:
    number = as_number(value, path, ctx)
    if number is not None and number <= 0:
        ctx.mismatch(path, "a number above 0", value)
        return None
    return number
