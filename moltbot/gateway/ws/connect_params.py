"""The `connect` request's params (protocol §3.1), validated strictly."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from moltbot.gateway.ws.params import Params

CLIENT_IDS = frozenset(
    {
        "webchat-ui",
        "moltbot-control-ui",
        "webchat",
        "cli",
        "gateway-client",
        "moltbot-macos",
        "moltbot-ios",
        "moltbot-android",
        "node-host",
        "test",
        "fingerprint",
        "moltbot-probe",
    }
)
CLIENT_MODES = frozenset({"webchat", "cli", "ui", "backend", "node", "probe", "test"})
_OPTIONAL_CLIENT_FIELDS = ("displayName", "deviceFamily", "modelIdentifier", "instanceId")


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    min_protocol: int
    max_protocol: int
    client: dict[str, Any]
    role: str
    scopes: tuple[str, ...]
    token: str | None
    password: str | None


def parse_connect(params: Any) -> ConnectRequest:
    p = Params(params)
    min_protocol = p.integer("minProtocol", required=True, minimum=1)
    max_protocol = p.integer("maxProtocol", required=True, minimum=1)
    client: dict[str, Any] = {}
    if (c := p.object("client", required=True)) is not None:
        client["id"] = c.choice("id", CLIENT_IDS, required=True)
        client["version"] = c.string("version", required=True, min_length=1)
        client["platform"] = c.string("platform", required=True, min_length=1)
        client["mode"] = c.choice("mode", CLIENT_MODES, required=True)
        for name in _OPTIONAL_CLIENT_FIELDS:
            client[name] = c.string(name)
    role = p.string("role")
    scopes = p.strings("scopes")
    p.strings("caps")
    p.strings("commands")
    p.bool_map("permissions")
    for name in ("pathEnv", "locale", "userAgent"):
        p.string(name)
    token = password = None
    if (auth := p.object("auth")) is not None:
        token, password = auth.string("token"), auth.string("password")
    if (device := p.object("device")) is not None:
        for name in ("id", "publicKey", "signature"):
            device.string(name, required=True, min_length=1)
        device.integer("signedAt", required=True, minimum=0)
        device.string("nonce")
    p.finish("connect")
    return ConnectRequest(
        min_protocol=min_protocol or 0,
        max_protocol=max_protocol or 0,
        client=client,
        role=role or "operator",
        scopes=tuple(scopes or ()),
        token=token,
        password=password,
    )
