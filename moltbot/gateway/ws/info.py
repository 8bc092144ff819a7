"""Read-only methods about the gateway itself: health, status, agents.list, models.list."""

from __future__ import annotations

from typing import Any

from moltbot.agents.directory import Agent
from moltbot.agents.runtime import now_ms
from moltbot.gateway.ws.budget import shrink
from moltbot.gateway.ws.call import Call
from moltbot.gateway.ws.health import HEARTBEAT_OFF
from moltbot.gateway.ws.params import Params
from moltbot.gateway.ws.protocol import unavailable
from moltbot.gateway.ws.views import (
    HIDDEN_KEYS,
    MAIN_KEY,
    default_model,
    echo_model_entry,
    session_status,
)

STATUS_RECENT = 10


async def health(call: Call, params: Any) -> dict[str, Any]:
    p = Params(params)
    probe = p.boolean("probe")
    p.finish("health")
    try:
        return await call.hub.health.get(probe=bool(probe))
    except Exception as exc:
        raise unavailable(f"health probe failed: {exc}") from exc


async def status(call: Call, params: Any) -> dict[str, Any]:
    """Params are ignored, as in the reference."""
    runtime, config, now = call.runtime, call.config, now_ms()
    store_path = config.session_store_location
    by_agent = []
    for agent in runtime.agents:
        rows, count = await runtime.store.list(agent_id=agent.id, limit=STATUS_RECENT + 2)
        recent = [session_status(r, config, now) for r in rows if r.key not in HIDDEN_KEYS]
        by_agent.append(
            {
                "agentId": agent.id,
                "path": store_path,
                "count": count,
                "recent": recent[:STATUS_RECENT],
            }
        )
    rows, count = await runtime.store.list(limit=STATUS_RECENT + 2)
    recent = [session_status(r, config, now) for r in rows if r.key not in HIDDEN_KEYS]
    defaults = default_model(config, runtime.providers.default_ref())
    result = {
        "heartbeat": {
            "defaultAgentId": runtime.agents.default_id,
            "agents": [_heartbeat(a) for a in runtime.agents],
        },
        "channelSummary": [],
        "queuedSystemEvents": [],
        "sessions": {
            "paths": [store_path],
            "count": count,
            "defaults": {"model": defaults["model"], "contextTokens": defaults["contextTokens"]},
            "recent": recent[:STATUS_RECENT],
            "byAgent": by_agent,
        },
    }
    # Many agents: their recent sessions go first (the last agent's first), then the overall.
    samples = [entry["recent"] for entry in reversed(by_agent)] + [result["sessions"]["recent"]]
    shrink(result, samples, call.room({}))
    return result


def _heartbeat(agent: Agent) -> dict[str, Any]:
    return {
        "agentId": agent.id,
        "enabled": HEARTBEAT_OFF["enabled"],
        "every": HEARTBEAT_OFF["every"],
        "everyMs": HEARTBEAT_OFF["everyMs"],
    }


async def agents_list(call: Call, params: Any) -> dict[str, Any]:
    Params(params).finish("agents.list")
    directory = call.runtime.agents
    agents = list(directory)  # default first
    ordered = agents[:1] + sorted(agents[1:], key=lambda a: a.id)
    # Only configured agents: no implicit "main" (protocol deviation §10.7).
    return {
        "defaultId": directory.default_id,
        "mainKey": MAIN_KEY,
        "scope": "per-sender",
        "agents": [_agent_entry(a) for a in ordered],
    }


def _agent_entry(agent: Agent) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": agent.id}
    if agent.name:
        entry["name"] = agent.name
    identity = agent.identity
    if identity is not None:
        shown = {
            k: v
            for k, v in (
                ("name", identity.name),
                ("theme", identity.theme),
                ("emoji", identity.emoji),
                ("avatar", identity.avatar),
            )
            if v
        }
        if identity.avatar and identity.avatar.startswith(("http://", "https://", "data:")):
            shown["avatarUrl"] = identity.avatar
        if shown:
            entry["identity"] = shown
    return entry


async def models_list(call: Call, params: Any) -> dict[str, Any]:
    Params(params).finish("models.list")
    models = [echo_model_entry()]
    for provider in call.config.models.providers:
        for model in provider.models:
            models.append(
                {
                    "id": model.id,
                    "name": model.name,
                    "provider": provider.name.lower(),
                    "contextWindow": model.context_window,
                }
            )
    models.sort(key=lambda m: (m["provider"], m["name"]))
    return {"models": models}
