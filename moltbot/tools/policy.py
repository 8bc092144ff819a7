"""Which of the agent's own tools an agent may use: profiles, allow and deny lists, groups.

Two levels: `tools` (every agent) and `agents.list[].tools` (one agent). Each level says
`profile`, `allow` and `deny`; an entry is a tool name, a group (`group:fs`, `group:runtime`,
`group:web`, `group:sessions`) or a name pattern with `*` (`sessions_*`, `*`). At one level:

- the base is the profile's tools; without a profile, every tool when `allow` is given, else
  (at the top level only) the `minimal` profile, so a fresh config gets file tools and nothing
  that runs commands or reaches the network;
- `allow`, when given, keeps only what it names; `deny` removes what it names (deny wins).

The agent's level starts from what the top level allows: it can only narrow it. Client tools
(a request's `tools`) are not subject to this: they run on the client.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from moltbot.config.model import ToolRules

GROUPS: dict[str, tuple[str, ...]] = {
    "fs": ("read", "write", "edit", "ls", "find"),
    "runtime": ("exec",),
    "web": ("web_fetch",),
    "sessions": ("sessions_list", "sessions_history"),
}
TOOL_NAMES: tuple[str, ...] = tuple(name for names in GROUPS.values() for name in names)
PROFILES: dict[str, frozenset[str]] = {
    "minimal": frozenset(GROUPS["fs"]),
    "coding": frozenset(GROUPS["fs"] + GROUPS["runtime"] + GROUPS["sessions"]),
    "full": frozenset(TOOL_NAMES),
}
DEFAULT_PROFILE = "minimal"
_ALL = frozenset(TOOL_NAMES)


def expand(entry: str) -> frozenset[str]:
    """The tool names an entry stands for. ValueError for a name or group that does not exist
    (a typo in a deny list must not silently deny nothing); a pattern may match nothing."""
    text = entry.strip().lower()
    if text.startswith("group:"):
        group = GROUPS.get(text[len("group:") :])
        if group is None:
            known = ", ".join(f"group:{name}" for name in GROUPS)
            raise ValueError(f"unknown tool group {entry!r} (known: {known})")
        return frozenset(group)
    if "*" in text:
        return frozenset(name for name in TOOL_NAMES if fnmatchcase(name, text))
    if text not in _ALL:
        raise ValueError(f"unknown tool {entry!r} (known: {', '.join(TOOL_NAMES)})")
    return frozenset((text,))


def expand_all(entries: tuple[str, ...]) -> frozenset[str]:
    names: set[str] = set()
    for entry in entries:
        names |= expand(entry)
    return frozenset(names)


def level_allows(rules: ToolRules, *, top: bool) -> frozenset[str]:
    """What one level lets through (see the module docstring)."""
    if rules.profile is not None:
        base = PROFILES[rules.profile]
    elif rules.allow is not None or not top:
        base = _ALL
    else:
        base = PROFILES[DEFAULT_PROFILE]
    if rules.allow is not None:
        base &= expand_all(rules.allow)
    return base - expand_all(rules.deny)


def allowed_tools(top: ToolRules, agent: ToolRules | None) -> frozenset[str]:
    """The agent's own tools an agent may use: the top level, narrowed by the agent's."""
    allowed = level_allows(top, top=True)
    if agent is not None:
        allowed &= level_allows(agent, top=False)
    return allowed
