"""The permit room: a key may be limited to some operations and models; others get a 403."""

from __future__ import annotations

from fnmatch import fnmatchcase

from aiohttp import web

from proxy.context import FACTS, Check
from proxy.errors import ProxyError


class NotPermitted(ProxyError):
    """403 in OpenAI's shape, naming what the key may not use."""

    def __init__(self, message: str, *, param: str | None, code: str) -> None:
        super().__init__(403, message, param=param, code=code)


def allowed(value: str | None, patterns: tuple[str, ...] | None) -> bool:
    """No list allows everything; a list allows what one of its glob patterns matches."""
    if patterns is None:
        return True
    return value is not None and any(fnmatchcase(value, pattern) for pattern in patterns)


def permit_check() -> Check:
    """Refuse, before anything is sent, what the principal's key is not allowed to use."""

    def permit(request: web.Request) -> None:
        facts = request[FACTS]
        principal, call = facts.principal, facts.call
        if principal.allowed_operations is None and principal.allowed_models is None:
            return  # most keys: allowed everything
        if not allowed(call.operation, principal.allowed_operations):
            raise NotPermitted(
                f"This key is not allowed to use {call.operation}.",
                param=None,
                code="operation_not_allowed",
            )
        if call.model is not None and not allowed(call.model, principal.allowed_models):
            raise NotPermitted(
                f"This key is not allowed to use the model {call.model}.",
                param="model",
                code="model_not_allowed",
            )

    return permit
