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


def _count(value: object) -> int | None:
    """An integer from JSON, or from a form field's digits; anything else is not a count."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _asked(values: Mapping[str, object], defaults: Mapping[str, object]) -> dict[str, object]:
    """The body's fields over the endpoint's defaults; a null field takes its default."""
    if None in values.values():
        values = {name: value for name, value in values.items() if value is not None}
    return {**defaults, **values}


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
    asked = _asked(values, defaults)
    model = params.get("model") if endpoint.path_model else asked.get("model")
    prompt, size, quality = asked.get("prompt"), asked.get("size"), asked.get("quality")
    stream = values.get("stream")
    return Call(
        endpoint.operation,
        True,
        model if isinstance(model, str) else None,
        prompt if isinstance(prompt, str) else None,
        _count(asked.get("n")),
        size if isinstance(size, str) else None,
        quality if isinstance(quality, str) else None,
        stream is True or stream == "true",
        params,
        fields_complete,
    )
