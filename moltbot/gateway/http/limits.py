"""Length caps on the request fields that become a stored session key."""

from __future__ import annotations

from moltbot.agents.session_keys import MAX_SESSION_KEY_CHARS
from moltbot.gateway.errors import InvalidRequest

# The OpenAI `user` field names a conversation (`agent:<id>:openai-user:<user>`): an id or an
# e-mail address, not a document.
MAX_USER_CHARS = 256
SESSION_KEY_HEADER = "x-moltbot-session-key"


def check_identity_fields(user: str | None, session_key: str | None) -> None:
    """Refuse a `user` or session key header too long to become a session key."""
    if user is not None and len(user) > MAX_USER_CHARS:
        raise InvalidRequest(_too_long("`user`", len(user), MAX_USER_CHARS), param="user")
    if session_key is not None and len(session_key.strip()) > MAX_SESSION_KEY_CHARS:
        message = _too_long(SESSION_KEY_HEADER, len(session_key.strip()), MAX_SESSION_KEY_CHARS)
        raise InvalidRequest(message, param=SESSION_KEY_HEADER)


def _too_long(what: str, length: int, limit: int) -> str:
    return f"{what} is too long: {length} characters, at most {limit}"
