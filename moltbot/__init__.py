"""Moltbot gateway: one aiohttp process serving the WebSocket control plane and an
OpenAI-compatible HTTP API, backed by one agent runtime."""

__version__ = "0.1.0"
