"""Gateway errors and the one place that renders them as OpenAI-style JSON.

Handlers raise; `error_middleware` turns every failure into
`{"error": {"message", "type", "param", "code"}}` with the right status. Tracebacks stay in logs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from moltbot.logs import get_logger

log = get_logger("moltbot.gateway")


class GatewayError(Exception):
    status = 500
    type = "api_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.headers = dict(headers or {})


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"


class Unauthorized(GatewayError):
    status = 401
    type = "unauthorized"

    def __init__(self, message: str = "Unauthorized") -> None:
        super().__init__(message, code="invalid_api_key")


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"

    def __init__(self, retry_after_seconds: int) -> None:
        super().__init__(
            f"too many failed authentication attempts; retry in {retry_after_seconds} s",
            code="rate_limited",
            headers={"Retry-After": str(retry_after_seconds)},
        )


class Forbidden(GatewayError):
    status = 403
    type = "permission_error"


class RequestTimeout(GatewayError):
    status = 408
    type = "invalid_request_error"


class MisdirectedRequest(GatewayError):
    """The Host header names a server this gateway does not answer for (DNS rebinding)."""

    status = 421
    type = "invalid_request_error"


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"


class UpstreamError(GatewayError):
    status = 502
    type = "upstream_error"


class UpstreamTimeout(GatewayError):
    status = 504
    type = "timeout_error"


class ServiceUnavailable(GatewayError):
    status = 503
    type = "service_unavailable"


def error_body(
    message: str, type_: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(
    status: int,
    message: str,
    type_: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps(error_body(message, type_, param, code)),
        content_type="application/json",
        headers=headers,
    )


# aiohttp's own HTTP exceptions (unknown route, wrong method, body too large) mapped to our types.
_HTTP_TYPES = {
    400: "invalid_request_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
}


def _from_http_exception(exc: web.HTTPException) -> web.Response:
    headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
    message = exc.reason if exc.status != 413 else "request body too large"
    type_ = _HTTP_TYPES.get(exc.status, "api_error")
    return error_response(exc.status, message, type_, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except GatewayError as exc:
        return error_response(
            exc.status, exc.message, exc.type, param=exc.param, code=exc.code, headers=exc.headers
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _from_http_exception(exc)
    except ConnectionResetError:
        raise  # the client went away: nothing to answer
    except Exception:
        log.exception("unhandled error", method=request.method, path=request.path)
        return error_response(500, "internal server error", "api_error")
