"""What the request schemas share: the `Schema` of a body, nested parts, metadata and bounds.

Constraints come from the reference pages in `shared/seeds` and the OpenAPI spec in
`shared/openai-openapi/openapi.yaml`. Fields nobody documents a constraint for are typed
loosely (`Any`), so Tollgate never refuses what OpenAI would take.

A body's shape is a `TypedDict` (keys not required unless marked `Required`), not a model:
Tollgate forwards the body as it came and only asks whether it is well formed, so a
validated dict of the keys sent does; a model would fill in every absent field's default and
build an instance, three times the cost, on every documented request.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, InstanceOf, TypeAdapter
from pydantic_core import PydanticCustomError

from proxy.png import Png, Read, inspect
from proxy.settings import ValidationMode

METADATA_PAIRS = 16
METADATA_KEY = 64
METADATA_VALUE = 512
# A body whose reference says "Additional properties are NOT allowed" (`with_config(CLOSED)`);
# any other body's undocumented fields pass untouched.
CLOSED = ConfigDict(extra="forbid")

B = TypeVar("B")  # a body, as the TypedDict of its shape
Rules = Callable[[B, ValidationMode], None]


class Schema(Generic[B]):
    """A documented request body: its shape, and the rules beyond it (those that depend on
    the model), which raise `InvalidRequest`."""

    def __init__(self, shape: type[B], rules: Rules[B] | None = None) -> None:
        self.name = shape.__name__
        self._validate = TypeAdapter(shape).validator.validate_python
        self._rules = rules

    def check(self, values: Mapping[str, object], strict: bool, mode: ValidationMode) -> None:
        """Raise pydantic's `ValidationError` for a body that breaks the shape, or the rules'
        `InvalidRequest` for one that breaks them."""
        body: B = self._validate(values, strict=strict)
        if self._rules is not None:
            self._rules(body, mode)


class Part(BaseModel):
    """A nested object of a request body; its undocumented fields pass untouched."""

    model_config = ConfigDict(extra="allow", frozen=True)


@dataclass(frozen=True, slots=True)
class UploadedFile:
    """A file part of a multipart form: its name, its size, and a way to read its bytes.

    `size` and `read` are None for a file that streams on unread (an upload part).
    """

    filename: str | None
    size: int | None
    read: Read | None

    def png(self) -> Png:
        """The file's PNG facts, read from its chunk headers (raises `NotPng`)."""
        if self.read is None or self.size is None:
            raise ValueError("the file was not held, so it cannot be inspected")
        return inspect(self.read, self.size)


def _metadata(value: dict[str, str]) -> dict[str, str]:
    """At most 16 pairs, keys up to 64 characters, values up to 512."""
    if len(value) > METADATA_PAIRS:
        raise PydanticCustomError(
            "object_above_max_properties",
            "too many properties",
            {"maximum": METADATA_PAIRS, "actual": len(value)},
        )
    for key, item in value.items():
        if len(key) > METADATA_KEY:
            raise PydanticCustomError(
                "metadata_key_too_long", "key too long", {"key": key, "maximum": METADATA_KEY}
            )
        if len(item) > METADATA_VALUE:
            raise PydanticCustomError(
                "metadata_value_too_long",
                "value too long",
                {"key": key, "maximum": METADATA_VALUE, "actual": len(item)},
            )
    return value


def missing(field: str) -> PydanticCustomError:
    """A required field of a nested object is absent (reported at that field's path)."""
    return PydanticCustomError("missing_nested", "missing", {"field": field})


File = InstanceOf[UploadedFile]  # a file part of a form; text where a file belongs is refused
Metadata = Annotated[dict[str, str], AfterValidator(_metadata)] | None
Temperature = Annotated[float, Field(ge=0, le=2)] | None
TopP = Annotated[float, Field(ge=0, le=1)] | None
