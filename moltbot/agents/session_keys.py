"""Session keys: `agent:<agentId>:<rest>` is the canonical form."""

from __future__ import annotations

# Namespaces the gateway keeps for its own runs; clients may not write into them.
RESERVED_PREFIXES = ("subagent:", "cron:", "acp:")
# The longest session key a client may name (HTTP `x-moltbot-session-key`, WS `sessionKey` and
# `key`). The canonical form adds at most `agent:<64-character id>:`. Keys are stored, listed
# and sent back in every session listing, so their length bounds those frames too.
MAX_SESSION_KEY_CHARS = 512


def agent_of_key(key: str) -> str | None:
    """The agent id of a canonical key, or None if the key is not `agent:<id>:<rest>`."""
    parts = [p for p in key.split(":") if p]
    if len(parts) >= 3 and parts[0] == "agent":
        return parts[1]
    return None


def is_reserved(key: str) -> bool:
    lowered = key.lower()
    rest = lowered.split(":", 2)[2] if agent_of_key(lowered) else lowered
    return lowered.startswith(RESERVED_PREFIXES) or rest.startswith(RESERVED_PREFIXES)


def canonical_key(key: str, default_agent: str) -> str:
    """`main` → the default agent's main session; a bare key `k` → `agent:<default>:k`."""
    key = key.strip()
    if key in ("global", "unknown") or agent_of_key(key):
        return key
    return f"agent:{default_agent}:{key}"


def main_key(agent_id: str) -> str:
    return f"agent:{agent_id}:main"
