"""Tunables of the WebSocket control plane, with the protocol's defaults.

Tests build a gateway with shorter timers or smaller buffers by passing their own `WsOptions`
to `build_app(config, ws_options=...)`; nothing reads module globals at run time.
"""

from __future__ import annotations

from dataclasses import dataclass

from moltbot.gateway.ws.protocol import (
    HANDSHAKE_TIMEOUT_SECONDS,
    MAX_BUFFERED_BYTES,
    MAX_PAYLOAD_BYTES,
    PREAUTH_MAX_PAYLOAD_BYTES,
    TICK_INTERVAL_SECONDS,
)

# aiohttp pings every socket this often and drops one whose pong does not come back: a
# transport-level liveness check, apart from the protocol's own `tick` events.
HEARTBEAT_SECONDS = 60.0
# How long a close handshake (and flushing what was queued before it) may take.
CLOSE_TIMEOUT_SECONDS = 5.0
# Sockets still in their handshake, in all and per client address. Each may hold a frame of up
# to max_payload, so these bound what unauthenticated clients can make the gateway keep.
MAX_PENDING_HANDSHAKES = 256
MAX_PENDING_HANDSHAKES_PER_IP = 16


@dataclass(frozen=True, slots=True)
class WsOptions:
    handshake_timeout: float = HANDSHAKE_TIMEOUT_SECONDS
    tick_interval: float = TICK_INTERVAL_SECONDS
    max_payload: int = MAX_PAYLOAD_BYTES
    preauth_max_payload: int = PREAUTH_MAX_PAYLOAD_BYTES
    max_buffered_bytes: int = MAX_BUFFERED_BYTES
    heartbeat: float | None = HEARTBEAT_SECONDS
    close_timeout: float = CLOSE_TIMEOUT_SECONDS
    max_pending_handshakes: int = MAX_PENDING_HANDSHAKES
    max_pending_handshakes_per_ip: int = MAX_PENDING_HANDSHAKES_PER_IP

    @property
    def tick_interval_ms(self) -> int:
        return round(self.tick_interval * 1000)
