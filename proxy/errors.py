"""OpenAI-shaped errors: the `ProxyError` family and the answer that renders every failure."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import web

from proxy.context import FACTS, SETTINGS
from proxy.quota_headers import add_rate_limit_headers


class ProxyError(Exception):
    """A refusal Tollgate answers itself, rendered as OpenAI's `{"error": {...}}` body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The error body exactly as OpenAI shapes it."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(ProxyError):
    """400: the request cannot be understood."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(400, message, param=param, code=code)


class NotFound(ProxyError):
    """404 for a path Tollgate does not serve, worded like OpenAI's own."""

    def __init__(self, method: str, path: str) -> None:
        super().__init__(404, f"Invalid URL ({method} {path})")


class Unauthorized(ProxyError):
    """401 for a missing or unknown key; never says which."""

    def __init__(self, message: str) -> None:
        super().__init__(401, message, code="invalid_api_key")


class PayloadTooLarge(ProxyError):
    """413 for a body over the configured limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            413,
            f"Request body too large: the limit is {limit} bytes.",
            param=None,
            code="request_too_large",
        )


class UpstreamUnavailable(ProxyError):
    """502 or 504 when the upstream cannot be reached or does not answer in time."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message, type="server_error", code="upstream_unavailable")


def render(error: ProxyError, request_id: str) -> web.Response:
    """An aiohttp response carrying `error` in OpenAI's shape."""
    response = web.Response(
        status=error.status,
        body=json.dumps(error.body()).encode(),
        content_type="application/json",
        headers=error.headers,
    )
    response.headers["x-request-id"] = request_id
    return response


def from_http_exception(request: web.Request, exc: web.HTTPException) -> ProxyError:
    """Translate aiohttp's own refusals (404, 405, 413, ...) into OpenAI's shape."""
    if exc.status == 404:
        return NotFound(request.method, request.path)
    if exc.status == 413:
        return PayloadTooLarge(request.config_dict[SETTINGS].max_request_bytes)
    kind = "server_error" if exc.status >= 500 else "invalid_request_error"
    return ProxyError(exc.status, exc.reason, type=kind)


Answer = Callable[[web.Request, Exception], web.StreamResponse]


def failure_answer(log: structlog.typing.FilteringBoundLogger) -> Answer:
    """What answers a request whose handling raised: every `ProxyError`, aiohttp refusal and
    unexpected crash as an OpenAI error (an aiohttp exception under 400, a redirect, is raised
    again). Called from the `except` clause that caught it (the crash's log has its trace)."""

    def answer(request: web.Request, exc: Exception) -> web.StreamResponse:
        if isinstance(exc, ProxyError):
            refusal = exc
        elif isinstance(exc, web.HTTPException):
            if exc.status < 400:
                raise exc
            refusal = from_http_exception(request, exc)
        else:
            log.exception("unhandled_error", request_id=request[FACTS].request_id)
            refusal = ProxyError(
                500, "The server had an error processing your request.", type="server_error"
            )
        facts = request[FACTS]
        response = render(refusal, facts.request_id)
        add_rate_limit_headers(response.headers, facts)  # refused after the quota room admitted it
        return response

    return answer
