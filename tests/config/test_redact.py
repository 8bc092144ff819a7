from __future__ import annotations

import json
from pathlib import Path

from moltbot.config import redacted
from tests.config.helpers import load
from tests.process import child_env, run_cli, write_config

SECRETS = ("tok-SECRET-1", "pw-SECRET-2", "key-SECRET-3", "hdr-SECRET-4", "url-SECRET-5")

FULL = """{
  gateway: {
    port: 1234, bind: "lan",
    auth: {mode: "token", token: "tok-SECRET-1", password: "pw-SECRET-2"},
    trustedProxies: ["10.0.0.1"],
    http: {maxBodyBytes: 2048, endpoints: {chatCompletions: {enabled: true}}},
    shutdownGraceSeconds: 3,
  },
  models: {providers: {P: {
    baseUrl: "https://user:url-SECRET-5@llm.example/v1", api: "openai-completions",
    apiKey: "key-SECRET-3",
    headers: {Authorization: "Bearer hdr-SECRET-4", "X-Api-Key": "hdr-SECRET-4",
              Cookie: "hdr-SECRET-4", "X-Team": "blue"},
    models: [{id: "m", name: "M"}],
  }}},
  agents: {
    defaults: {model: {primary: "p/m", fallbacks: []}, workspace: "/ws", userTimezone: "UTC"},
    list: [{id: "main", name: "Main", identity: {emoji: "x"}, model: "p/m"}],
  },
  session: {store: "/data/s.sqlite"},
  logging: {level: "debug", format: "json"},
}"""


def test_redacted_masks_every_secret(tmp_path: Path) -> None:
    shown = redacted(load(tmp_path, FULL).config)
    text = json.dumps(shown)
    for secret in SECRETS:
        assert secret not in text
    gateway = shown["gateway"]
    assert gateway["auth"]["token"] == "***"
    assert gateway["auth"]["password"] == "***"
    provider = shown["models"]["providers"]["p"]
    assert provider["apiKey"] == "***"
    assert provider["baseUrl"] == "https://***@llm.example/v1"
    assert provider["headers"] == {
        "Authorization": "***",
        "X-Api-Key": "***",
        "Cookie": "***",
        "X-Team": "blue",
    }


def test_redacted_has_the_file_shape(tmp_path: Path) -> None:
    shown = redacted(load(tmp_path, FULL).config)
    assert shown["gateway"]["port"] == 1234
    assert shown["gateway"]["bind"] == "lan"
    assert shown["gateway"]["trustedProxies"] == ["10.0.0.1"]
    assert shown["gateway"]["http"] == {
        "maxBodyBytes": 2048,
        "endpoints": {"chatCompletions": {"enabled": True}, "responses": {"enabled": False}},
        "images": {"allowUrl": False, "allowedHosts": [], "timeoutSeconds": 10.0},
    }
    assert shown["gateway"]["auth"]["rateLimit"]["maxAttempts"] == 10
    assert shown["models"]["providers"]["p"]["models"] == [
        {"id": "m", "name": "M", "contextWindow": 200000, "maxTokens": 8192, "input": ["text"]}
    ]
    assert shown["agents"]["defaults"]["model"] == {"primary": "p/m", "fallbacks": []}
    assert shown["agents"]["defaults"]["workspace"] == "/ws"
    assert shown["agents"]["list"] == [
        {
            "id": "main",
            "default": False,
            "name": "Main",
            "model": {"primary": "p/m"},
            "identity": {"emoji": "x"},
        }
    ]
    assert shown["session"] == {"store": "/data/s.sqlite"}
    assert shown["logging"] == {"level": "debug", "format": "json"}


def test_redacted_output_is_itself_a_valid_config(tmp_path: Path) -> None:
    shown = redacted(load(tmp_path, FULL).config)
    again = load(tmp_path / "again", json.dumps(shown)).config
    assert again.gateway.port == 1234
    assert again.models.providers[0].api_key == "***"


def test_redacted_omits_unset_secrets(tmp_path: Path) -> None:
    shown = redacted(load(tmp_path, "{}").config)
    assert "token" not in shown["gateway"]["auth"]
    assert "password" not in shown["gateway"]["auth"]
    assert shown["models"] == {"providers": {}}


def test_env_sourced_token_is_masked_too(tmp_path: Path) -> None:
    config = load(tmp_path, "{}", env={"MOLTBOT_GATEWAY_TOKEN": "env-SECRET"}).config
    assert "env-SECRET" not in json.dumps(redacted(config))


def test_secret_query_values_in_base_urls_are_masked(tmp_path: Path) -> None:
    text = """{models: {providers: {az: {
      baseUrl: "https://llm.example/openai?api-version=2024-06-01&api-key=q-SECRET-6&sig=a%2Bb-SECRET-7&x=1",
      api: "openai-completions", models: [{id: "m", name: "M"}],
    }}}}"""
    shown = redacted(load(tmp_path, text).config)
    url = shown["models"]["providers"]["az"]["baseUrl"]
    assert url == "https://llm.example/openai?api-version=2024-06-01&api-key=***&sig=***&x=1"


def test_config_show_prints_no_secret_of_a_base_url(tmp_path: Path) -> None:
    config = {
        "models": {
            "providers": {
                "p": {
                    "baseUrl": "https://me:u-SECRET-8@llm.example/v1?token=q-SECRET-9",
                    "api": "openai-completions",
                    "models": [{"id": "m", "name": "M"}],
                }
            }
        }
    }
    path = write_config(tmp_path / "moltbot.json", config)
    result = run_cli(["config", "show", "--config", str(path)], child_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "SECRET" not in result.stdout
    assert "https://***@llm.example/v1?token=***" in result.stdout


def test_redacted_shows_the_network_keys(tmp_path: Path) -> None:
    text = """{gateway: {allowedOrigins: ["https://Chat.example.com"], allowedHosts: ["gw.example"],
        limits: {maxConnections: 100, headersTimeoutSeconds: 5}}}"""
    gateway = redacted(load(tmp_path, text).config)["gateway"]
    assert gateway["allowedOrigins"] == ["https://chat.example.com"]
    assert gateway["allowedHosts"] == ["gw.example"]
    assert gateway["limits"] == {
        "maxConnections": 100,
        "maxConnectionsPerIp": 256,
        "headersTimeoutSeconds": 5.0,
        "bodyTimeoutSeconds": 30.0,
    }
