"""The endpoint table: each documented OpenAI operation by method and path pattern."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType


class BodyKind(Enum):
    """How the room that parses requests treats an operation's body."""

    NONE = "none"  # no body expected; anything sent is streamed on untouched
    JSON = "json"  # a JSON object, read whole (bounded) and parsed once
    FORM = "form"  # multipart form: held whole when validating; else text fields read, files stream
    PART = "part"  # multipart form whose file always streams: its head is read when validating
    STREAM = "stream"  # streamed on untouched (pass-through)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One documented operation."""

    method: str
    pattern: str
    operation: str
    body: BodyKind
    path_model: bool = False  # the `{model}` path parameter names the model
    cached: bool = False  # a deterministic read, cached by default
    defaults: Mapping[str, str | int] = field(default_factory=lambda: MappingProxyType({}))


def _defaults(**values: str | int) -> Mapping[str, str | int]:
    """The documented defaults of an operation, as a read-only mapping."""
    return MappingProxyType(values)


# Defaults from the reference pages: what the upstream assumes when a field is left out.
_DALL_E_2 = _defaults(model="dall-e-2", n=1, size="1024x1024")
_GENERATE = _defaults(model="dall-e-2", n=1, size="1024x1024", quality="standard")
_MODERATE = _defaults(model="omni-moderation-latest")


PASSTHROUGH = Endpoint("*", "/v1/{path}", "passthrough", BodyKind.STREAM)

_J, _F, _N = BodyKind.JSON, BodyKind.FORM, BodyKind.NONE

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("POST", "/v1/images/generations", "images.generate", _J, defaults=_GENERATE),
    Endpoint("POST", "/v1/images/edits", "images.edit", _F, defaults=_DALL_E_2),
    Endpoint("POST", "/v1/images/variations", "images.create_variation", _F, defaults=_DALL_E_2),
    Endpoint("GET", "/v1/models", "models.list", _N, cached=True),
    Endpoint("GET", "/v1/models/{model}", "models.retrieve", _N, path_model=True, cached=True),
    Endpoint("DELETE", "/v1/models/{model}", "models.delete", _N, path_model=True),
    Endpoint("POST", "/v1/moderations", "moderations.create", _J, defaults=_MODERATE),
    Endpoint("POST", "/v1/assistants", "beta.assistants.create", _J),
    Endpoint("GET", "/v1/assistants", "beta.assistants.list", _N),
    Endpoint("GET", "/v1/assistants/{assistant_id}", "beta.assistants.retrieve", _N),
    Endpoint("POST", "/v1/assistants/{assistant_id}", "beta.assistants.update", _J),
    Endpoint("DELETE", "/v1/assistants/{assistant_id}", "beta.assistants.delete", _N),
    Endpoint("POST", "/v1/threads", "beta.threads.create", _J),
    Endpoint("POST", "/v1/threads/{thread_id}/messages", "beta.messages.create", _J),
    Endpoint("GET", "/v1/threads/{thread_id}/messages", "beta.messages.list", _N),
    Endpoint("POST", "/v1/threads/{thread_id}/runs", "beta.runs.create", _J),
    Endpoint("POST", "/v1/uploads", "uploads.create", _J),
    Endpoint("POST", "/v1/uploads/{upload_id}/parts", "uploads.parts.create", BodyKind.PART),
    Endpoint("POST", "/v1/uploads/{upload_id}/complete", "uploads.complete", _J),
)


@dataclass(slots=True)
class Match:
    """An endpoint and the path parameters it matched with."""

    endpoint: Endpoint
    params: dict[str, str]


def _compile(pattern: str) -> re.Pattern[str]:
    """`/v1/models/{model}` becomes a regex with one named group a segment."""
    regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern)
    return re.compile(regex + "$")


class EndpointTable:
    """Finds the documented operation for a method and path, by exact segments: a path
    without parameters by one lookup, the others by their regexes in turn."""

    def __init__(self, endpoints: tuple[Endpoint, ...] = ENDPOINTS) -> None:
        self._exact: dict[tuple[str, str], Endpoint] = {}
        self._by_method: dict[str, list[tuple[re.Pattern[str], Endpoint]]] = {}
        for endpoint in endpoints:
            if "{" not in endpoint.pattern:
                self._exact[endpoint.method, endpoint.pattern] = endpoint
                continue
            routes = self._by_method.setdefault(endpoint.method, [])
            routes.append((_compile(endpoint.pattern), endpoint))

    def match(self, method: str, path: str) -> Match | None:
        """The documented endpoint for this request, or None for a pass-through path."""
        exact = self._exact.get((method, path))
        if exact is not None:
            return Match(exact, {})
        for regex, endpoint in self._by_method.get(method, ()):
            found = regex.match(path)
            if found:
                return Match(endpoint, found.groupdict())
        return None
