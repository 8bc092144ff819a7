"""GET /v1/models and /v1/models/{id}: the agents, offered as OpenAI model ids."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from moltbot.agents.directory import AgentDirectory
from moltbot.gateway.errors import NotFound
from moltbot.gateway.state import AUTH_KEY, RUNTIME_KEY, STARTED_AT_KEY


def model_ids(agents: AgentDirectory) -> list[str]:
    """`moltbot` (the name the docs use) and `moltbot/default` first, then `moltbot/<id>` for
    every agent."""
    return ["moltbot", "moltbot/default", *(f"moltbot/{agent.id}" for agent in agents)]


def model_body(model_id: str, created: int) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": "moltbot"}


async def list_models(request: web.Request) -> web.Response:
    request.app[AUTH_KEY].check_request(request)
    created = _created(request)
    ids = model_ids(request.app[RUNTIME_KEY].agents)
    return web.json_response({"object": "list", "data": [model_body(i, created) for i in ids]})


async def get_model(request: web.Request) -> web.Response:
    request.app[AUTH_KEY].check_request(request)
    model_id = request.match_info["model_id"]
    if model_id not in model_ids(request.app[RUNTIME_KEY].agents):
        raise NotFound(
            f"The model `{model_id}` does not exist", param="model", code="model_not_found"
        )
    return web.json_response(model_body(model_id, _created(request)))


def _created(request: web.Request) -> int:
    return int(request.app[STARTED_AT_KEY])
