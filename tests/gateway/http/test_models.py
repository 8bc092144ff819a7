"""GET /v1/models and /v1/models/{id}: the agents as model ids, same gating and auth as chat."""

from __future__ import annotations

import asyncio
from pathlib import Path

import openai
import pytest

from moltbot.config.model import AgentConfig
from tests.conftest import StartGateway, make_config
from tests.gateway.http.helpers import request, with_http


async def test_list_names_the_default_then_every_agent(
    start_gateway: StartGateway, state_dir: Path
) -> None:
    agents = (AgentConfig(id="alpha"), AgentConfig(id="beta", default=True))
    gateway = await start_gateway(make_config(state_dir, agents=agents))
    reply = await request(gateway, "GET", "/v1/models")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("application/json")
    document = reply.json()
    assert document["object"] == "list"
    assert [m["id"] for m in document["data"]] == [
        "moltbot",
        "moltbot/default",
        "moltbot/beta",
        "moltbot/alpha",
    ]
    for model in document["data"]:
        assert set(model) == {"id", "object", "created", "owned_by"}
        assert model["object"] == "model" and model["owned_by"] == "moltbot"
        assert isinstance(model["created"], int)


@pytest.mark.parametrize("path", ["moltbot/beta", "moltbot%2Fbeta", "moltbot%2fdefault"])
async def test_get_one_model_plain_or_url_encoded(
    start_gateway: StartGateway, state_dir: Path, path: str
) -> None:
    gateway = await start_gateway(make_config(state_dir, agents=(AgentConfig(id="beta"),)))
    reply = await request(gateway, "GET", f"/v1/models/{path}")
    assert reply.status == 200
    expected = path.replace("%2F", "/").replace("%2f", "/")
    assert reply.json()["id"] == expected
    assert reply.json()["object"] == "model"


async def test_bare_moltbot_is_listed_and_can_be_retrieved_like_it_can_be_used(
    start_gateway: StartGateway, state_dir: Path
) -> None:
    gateway = await start_gateway(make_config(state_dir))
    reply = await request(gateway, "GET", "/v1/models/moltbot")
    assert reply.status == 200
    assert reply.json() == {
        "id": "moltbot",
        "object": "model",
        "created": reply.json()["created"],
        "owned_by": "moltbot",
    }
    listed = (await request(gateway, "GET", "/v1/models")).json()["data"]
    assert listed[0] == reply.json()


@pytest.mark.parametrize("model_id", ["moltbot/nope", "gpt-4o", "moltbot:main"])
async def test_unknown_model_is_404_model_not_found(
    start_gateway: StartGateway, state_dir: Path, model_id: str
) -> None:
    gateway = await start_gateway(make_config(state_dir))
    reply = await request(gateway, "GET", f"/v1/models/{model_id}")
    assert reply.status == 404
    assert reply.error["code"] == "model_not_found"
    assert reply.error["type"] == "invalid_request_error"


async def test_models_need_the_bearer_and_the_endpoint_enabled(
    start_gateway: StartGateway, state_dir: Path
) -> None:
    gateway = await start_gateway(make_config(state_dir))
    for path in ("/v1/models", "/v1/models/moltbot%2Fdefault"):
        reply = await request(gateway, "GET", path, headers={})
        assert reply.status == 401
        assert reply.error["type"] == "unauthorized"
    disabled = await start_gateway(make_config(state_dir, chat=False))
    for path in ("/v1/models", "/v1/models/moltbot%2Fdefault"):
        assert (await request(disabled, "GET", path)).status == 404


async def test_models_are_served_with_the_responses_endpoint_alone(
    start_gateway: StartGateway, state_dir: Path
) -> None:
    config = with_http(make_config(state_dir, chat=False), responses_enabled=True)
    gateway = await start_gateway(config)
    assert (await request(gateway, "GET", "/v1/models")).status == 200
    assert (await request(gateway, "GET", "/v1/models/moltbot")).status == 200
    assert (await request(gateway, "POST", "/v1/chat/completions", json={})).status == 404


async def test_sync_sdk_lists_and_retrieves(start_gateway: StartGateway, state_dir: Path) -> None:
    gateway = await start_gateway(make_config(state_dir, agents=(AgentConfig(id="beta"),)))

    def call() -> tuple[list[str], str]:
        with gateway.openai_sync() as client:
            ids = [m.id for m in client.models.list()]
            with pytest.raises(openai.NotFoundError) as missing:
                client.models.retrieve("moltbot/nope")
            assert missing.value.code == "model_not_found"
            return ids, client.models.retrieve("moltbot/beta").id

    ids, retrieved = await asyncio.to_thread(call)
    assert ids == ["moltbot", "moltbot/default", "moltbot/beta"]
    assert retrieved == "moltbot/beta"
