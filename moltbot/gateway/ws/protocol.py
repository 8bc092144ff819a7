"""Protocol 3 wire shapes: request frames in, response and event frames out, error shapes.

Pure data: nothing here knows about aiohttp, sockets or the runtime. `RpcError` is what method
handlers raise; the connection turns it into an ErrorShape in a `res` frame.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

PROTOCOL_VERSION = 3
MAX_PAYLOAD_BYTES = 512 * 1024
# Before a client has authenticated it gets much less room (the protocol's later revision).
PREAUTH_MAX_PAYLOAD_BYTES = 64 * 1024
MAX_BUFFERED_BYTES = 1536 * 1024
TICK_INTERVAL_SECONDS = 30.0
# The reference allows 10 s; a real client needs one round trip, and every socket still in its
# handshake holds a pre-auth slot, so idle ones are dropped sooner.
HANDSHAKE_TIMEOUT_SECONDS = 5.0
# A WebSocket close reason must fit in 123 bytes; the reference cuts at 120.
CLOSE_REASON_MAX_BYTES = 120

# Close codes (RFC 6455 §7.4.1).
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_POLICY_VIOLATION = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011
CLOSE_SERVICE_RESTART = 1012
CLOSE_TRY_AGAIN_LATER = 1013


class ErrorCode(StrEnum):
    INVALID_REQUEST = "INVALID_REQUEST"
    UNAVAILABLE = "UNAVAILABLE"
    NOT_PAIRED = "NOT_PAIRED"
    NOT_LINKED = "NOT_LINKED"
    AGENT_TIMEOUT = "AGENT_TIMEOUT"


class RpcError(Exception):
    """A failed request, as the client will see it."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        details: Any = None,
        retryable: bool | None = None,
        retry_after_ms: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details
        self.retryable = retryable
        self.retry_after_ms = retry_after_ms

    def shape(self) -> dict[str, Any]:
        """The ErrorShape: optional fields only when set."""
        shape: dict[str, Any] = {"code": str(self.code), "message": self.message}
        if self.details is not None:
            shape["details"] = self.details
        if self.retryable is not None:
            shape["retryable"] = self.retryable
        if self.retry_after_ms is not None:
            shape["retryAfterMs"] = self.retry_after_ms
        return shape


def invalid_request(message: str, **kwargs: Any) -> RpcError:
    return RpcError(ErrorCode.INVALID_REQUEST, message, **kwargs)


def unavailable(message: str, **kwargs: Any) -> RpcError:
    return RpcError(ErrorCode.UNAVAILABLE, message, **kwargs)


# -- inbound ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestFrame:
    id: str
    method: str
    params: Any  # missing params arrive as {}


class FrameError(Exception):
    """JSON that is not a valid request frame. `frame_id` is the frame's id when it had a
    usable one, so the error `res` can still be matched by the client."""

    def __init__(self, message: str, frame_id: str | None) -> None:
        super().__init__(message)
        self.message = message
        self.frame_id = frame_id


_REQUEST_KEYS = frozenset({"type", "id", "method", "params"})


def decode_json(data: str | bytes) -> Any:
    """Raises ValueError for anything that is not one JSON document."""
    try:
        return json.loads(data)
    except RecursionError:  # `[[[[…` nested deeper than the parser's stack allows
        raise ValueError("JSON nested too deeply") from None


def parse_request(frame: Any) -> RequestFrame:
    """Validate a decoded frame strictly: `{type:"req", id, method, params?}` and nothing else."""
    if not isinstance(frame, dict):
        raise FrameError("invalid request frame: at root: must be object", None)
    raw_id = frame.get("id")
    frame_id = raw_id if isinstance(raw_id, str) and raw_id else None
    problems = [f"at root: unexpected property '{k}'" for k in frame if k not in _REQUEST_KEYS]
    if frame.get("type") != "req":
        problems.append('at /type: must be equal to constant "req"')
    for name in ("id", "method"):
        value = frame.get(name)
        if name not in frame:
            problems.append(f"at root: must have required property '{name}'")
        elif not isinstance(value, str):
            problems.append(f"at /{name}: must be string")
        elif not value:
            problems.append(f"at /{name}: must NOT have fewer than 1 characters")
    if problems:
        raise FrameError("invalid request frame: " + "; ".join(problems), frame_id)
    params = frame.get("params")
    return RequestFrame(frame["id"], frame["method"], {} if params is None else params)


# -- outbound -----------------------------------------------------------------------------------


def response_frame(
    request_id: str, ok: bool, payload: Any = None, error: RpcError | None = None
) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "res", "id": request_id, "ok": ok}
    if payload is not None:
        frame["payload"] = payload
    if error is not None:
        frame["error"] = error.shape()
    return frame


def event_frame(name: str, payload: Any = None, seq: int | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "event", "event": name}
    if payload is not None:
        frame["payload"] = payload
    if seq is not None:
        frame["seq"] = seq
    return frame


def encode(frame: dict[str, Any]) -> bytes:
    """The UTF-8 bytes of a text frame; its length is what counts against buffer limits."""
    text = json.dumps(frame, ensure_ascii=False, separators=(",", ":"))
    try:
        return text.encode()
    except UnicodeEncodeError:
        # A lone surrogate (from a client's frame id or a model's output) has no UTF-8 form;
        # JSON's \u escapes carry it, so the frame still goes out instead of failing.
        return json.dumps(frame, separators=(",", ":")).encode()


def close_reason(text: str) -> str:
    """`text` cut to what a close frame can carry, on a character boundary."""
    data = text.encode("utf-8", "backslashreplace")  # lone surrogates become `\ud800`
    if len(data) <= CLOSE_REASON_MAX_BYTES:
        return data.decode()
    return data[:CLOSE_REASON_MAX_BYTES].decode(errors="ignore")
