"""The `Call`: one request parsed once into the facts that later rooms read."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from proxy.endpoints import Endpoint


@dataclass(slots=True)
class Call:
    """What a request asks for, as far as Tollgate needs to know. Read-only by convention:
    a frozen dataclass costs a `object.__setattr__` per field on every request."""

    operation: str
    documented: bool
    model: str | None = None
    prompt: str | None = None
    n: int | None = None
    size: str | None = None
    quality: str | None = None
    stream: bool = False
    params: Mapping[str, str] = field(default_factory=dict)
    fields_complete: bool = True  # False when a form's text fields were not all read ahead


PASSTHROUGH_CALL = Call("passthrough", documented=False)
IMAGE_OPERATIONS = frozenset({"images.generate", "images.edit", "images.create_variation"})


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _count(value: object) -> int | None:
    """An integer from JSON, or from a form field's digits; anything else is not a count."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _flag(value: object) -> bool:
    return value is True or value == "true"


def build_call(
    endpoint: Endpoint,
    params: Mapping[str, str],
    values: Mapping[str, object],
    *,
    fields_complete: bool = True,
) -> Call:
    """A `Call` from the endpoint, its path parameters and the body's fields (JSON or form);
    a field that is absent or null takes the endpoint's documented default."""
    defaults = endpoint.defaults
    if not values and not defaults and not endpoint.path_model:
        return Call(endpoint.operation, True, params=params)

    def field(name: str) -> object:
        value = values.get(name)
        return defaults.get(name) if value is None else value

    model = params.get("model") if endpoint.path_model else _text(field("model"))
    return Call(
        endpoint.operation,
        True,
        model,
        _text(field("prompt")),
        _count(field("n")),
        _text(field("size")),
        _text(field("quality")),
        _flag(values.get("stream")),
        params,
        fields_complete,
    )
