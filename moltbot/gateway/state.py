"""Typed keys for what the application holds."""

from __future__ import annotations

from aiohttp import web

from moltbot.agents.runtime import AgentRuntime
from moltbot.config.model import Config
from moltbot.gateway.auth import Authenticator

CONFIG_KEY = web.AppKey("config", Config)
AUTH_KEY = web.AppKey("authenticator", Authenticator)
RUNTIME_KEY = web.AppKey("runtime", AgentRuntime)
STARTED_AT_KEY = web.AppKey("started_at", float)
