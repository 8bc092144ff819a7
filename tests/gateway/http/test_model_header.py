"""`x-moltbot-model: <provider>/<model>` picks the backend model for one request, on both
OpenAI endpoints, among the models the agent may use; the access log names the model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from moltbot.config.model import AgentConfig, Config, ModelChoice
from tests.conftest import Gateway, StartGateway, make_config
from tests.fake_upstreams import FakeOpenAI, provider_config
from tests.gateway.http.helpers import Reply, chat_body, post_chat, with_http
from tests.gateway.http.responses_helpers import post_responses

HEADER = "x-moltbot-model"


def _config(state_dir: Path, up: FakeOpenAI, up2: FakeOpenAI, **options: Any) -> Config:
    """Providers `up` (models m1, m2) and `up2` (m1); agents use up/m1 then up2/m1."""
    providers = (provider_config(up, "up", ("m1", "m2")), provider_config(up2, "up2"))
    config = make_config(
        state_dir, providers=providers, primary="up/m1", fallbacks=("up2/m1",), **options
    )
    return with_http(config, responses_enabled=True)


async def _post(gateway: Gateway, endpoint: str, ref: str | None, **body: Any) -> Reply:
    headers = {HEADER: ref} if ref is not None else {}
    if endpoint == "chat":
        return await post_chat(gateway, chat_body(**body), headers=headers)
    return await post_responses(gateway, {"input": "hi", **body}, headers=headers)


ENDPOINTS = ["chat", "responses"]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_the_header_picks_one_of_the_agent_s_models(
    start_gateway: StartGateway,
    state_dir: Path,
    up: FakeOpenAI,
    up2: FakeOpenAI,
    endpoint: str,
) -> None:
    gateway = await start_gateway(_config(state_dir, up, up2))
    with capture_logs() as logs:
        assert (await _post(gateway, endpoint, "up2/m1")).status == 200
        assert (await _post(gateway, endpoint, "UP/m1")).status == 200  # provider: any case
        assert (await _post(gateway, endpoint, None)).status == 200
    assert [len(up.requests), len(up2.requests)] == [2, 1]
    assert up2.requests[0].json["model"] == "m1"
    lines = [e for e in logs if e["event"] == "http request"]
    assert [line["model"] for line in lines] == ["up2/m1", "up/m1", "up/m1"]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_a_picked_model_that_fails_does_not_fall_back(
    start_gateway: StartGateway,
    state_dir: Path,
    up: FakeOpenAI,
    up2: FakeOpenAI,
    endpoint: str,
) -> None:
    gateway = await start_gateway(_config(state_dir, up, up2))
    up2.status(401)  # not retried
    reply = await _post(gateway, endpoint, "up2/m1")
    assert reply.status == 502 and reply.error["code"] == "auth"
    assert up.requests == []


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(
    ("ref", "code"),
    [
        ("up/m2", "model_not_allowed"),  # configured, but not one of the agent's models
        ("other/m1", "model_not_allowed"),
        ("up/M1", "model_not_allowed"),  # model ids are exact
        ("m1", "invalid_model"),
        ("", "invalid_model"),
        ("up/", "invalid_model"),
    ],
)
async def test_any_other_value_is_400_naming_the_header(
    start_gateway: StartGateway,
    state_dir: Path,
    up: FakeOpenAI,
    up2: FakeOpenAI,
    endpoint: str,
    ref: str,
    code: str,
) -> None:
    gateway = await start_gateway(_config(state_dir, up, up2))
    reply = await _post(gateway, endpoint, ref)
    assert reply.status == 400
    assert (reply.error["param"], reply.error["code"]) == (HEADER, code)
    assert up.requests == [] and up2.requests == []


async def test_an_agent_s_own_models_decide(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI, up2: FakeOpenAI
) -> None:
    agents = (
        AgentConfig(id="main", default=True),
        AgentConfig(id="beta", model=ModelChoice("up/m2", ())),
    )
    gateway = await start_gateway(_config(state_dir, up, up2, agents=agents))
    assert (await _post(gateway, "responses", "up/m2", model="moltbot/beta")).status == 200
    refused = await _post(gateway, "responses", "up/m2")  # not one of main's
    assert refused.status == 400 and refused.error["param"] == HEADER
    assert [r.json["model"] for r in up.requests] == ["m2"]


async def test_without_providers_the_default_model_may_be_named(
    start_gateway: StartGateway, state_dir: Path
) -> None:
    gateway = await start_gateway(make_config(state_dir))  # builtin/echo
    reply = await post_chat(gateway, chat_body(), headers={HEADER: "builtin/echo"})
    assert reply.status == 200
    assert reply.json()["choices"][0]["message"]["content"] == "hi"
