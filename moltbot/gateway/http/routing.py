"""What the OpenAI-compatible endpoints share: choosing the agent, the session and the backend
model of a request, and the HTTP error of a failed run."""

from __future__ import annotations

import re
import uuid

from aiohttp import web

from moltbot.agents.directory import AgentDirectory
from moltbot.agents.run import Run
from moltbot.agents.session_keys import canonical_key, is_reserved
from moltbot.config.agents import normalize_agent_id
from moltbot.gateway.errors import (
    GatewayError,
    InvalidRequest,
    NotFound,
    ServiceUnavailable,
    UpstreamError,
    UpstreamTimeout,
)
from moltbot.gateway.http.limits import SESSION_KEY_HEADER

MODEL_HEADER = "x-moltbot-model"
_AGENT_MODEL = re.compile(r"^(?:moltbot[:/]|agent:)([a-z0-9][a-z0-9_-]{0,63})$", re.IGNORECASE)
_DEFAULT_MODELS = ("moltbot", "moltbot/default", "moltbot:default")
_MODEL_REF = re.compile(r"^[^/\s]+/\S.*$")
_UPSTREAM_KINDS = ("auth", "rate_limit", "upstream", "connection", "malformed")


def resolve_agent(request: web.Request, model: str, agents: AgentDirectory) -> str | None:
    """The agent named by header or model, or None for "the default / the session key's"."""
    header = request.headers.get("x-moltbot-agent-id") or request.headers.get("x-moltbot-agent")
    if header and header.strip():
        return _known_agent(normalize_agent_id(header), agents, param=None)
    if model in _DEFAULT_MODELS:
        return None
    match = _AGENT_MODEL.match(model)
    if not match:
        raise NotFound(
            f"The model `{model}` does not exist. Use `moltbot` or `moltbot/<agentId>` "
            "(GET /v1/models lists them).",
            param="model",
            code="model_not_found",
        )
    agent_id = normalize_agent_id(match[1])
    return None if agent_id == "default" else _known_agent(agent_id, agents, param="model")


def _known_agent(agent_id: str, agents: AgentDirectory, param: str | None) -> str:
    if agents.get(agent_id) is None:
        raise NotFound(f'unknown agent "{agent_id}"', param=param, code="model_not_found")
    return agent_id


def resolve_session(
    request: web.Request,
    agent_id: str | None,
    user: str | None,
    agents: AgentDirectory,
    *,
    fresh_namespace: str = "openai",
) -> tuple[str, bool]:
    """(session key, whether it is a fresh one): the header's key, a key per OpenAI `user`, or
    a new key `agent:<id>:<fresh_namespace>:<uuid>` that no earlier request used."""
    owner = agent_id or agents.default_id
    header = (request.headers.get(SESSION_KEY_HEADER) or "").strip()
    if header:
        if is_reserved(header):
            raise InvalidRequest(
                f'session key "{header}" is in a reserved namespace', param=SESSION_KEY_HEADER
            )
        return canonical_key(header, owner), False
    if user:
        return f"agent:{owner}:openai-user:{user.lower()}", False
    return f"agent:{owner}:{fresh_namespace}:{uuid.uuid4()}", True


def model_override(request: web.Request) -> str | None:
    """The backend model the request picks with `x-moltbot-model: <provider>/<model>`; the
    runtime checks it is one the agent may use."""
    value = request.headers.get(MODEL_HEADER)
    if value is None:
        return None
    ref = value.strip()
    if not _MODEL_REF.match(ref):
        raise InvalidRequest(
            f"{MODEL_HEADER} must be <provider>/<model>, one of the agent's models",
            param=MODEL_HEADER,
            code="invalid_model",
        )
    return ref


def run_failure(run: Run) -> GatewayError:
    """A failed or aborted run as the HTTP error a client should see."""
    message = run.error or "the agent run failed"
    if run.status == "aborted":
        return ServiceUnavailable(f"the agent run was aborted: {message}", code="run_aborted")
    if run.error_kind == "timeout":
        return UpstreamTimeout(message, code="timeout")
    if run.error_kind in _UPSTREAM_KINDS:
        return UpstreamError(message, code=run.error_kind)
    return GatewayError(message, code=run.error_kind)
