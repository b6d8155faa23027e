"""POST /v1/moderations: an input (text, texts, or multi-modal parts) is required."""

from __future__ import annotations

from typing import Literal, Required, Self

from pydantic import model_validator
from typing_extensions import TypedDict

from proxy.schemas.base import Part, Schema, missing


class ImageUrl(Part):
    """Either a URL of the image or the base64 encoded image data."""

    url: str


class ModerationInput(Part):
    """One multi-modal input: `{"type": "text", "text"}` or `{"type": "image_url", "image_url"}`.

    One flat model with the type's own field required, rather than a union, so an error inside
    names a plain path (`input[0].text`).
    """

    type: Literal["image_url", "text"]
    text: str | None = None
    image_url: ImageUrl | None = None

    @model_validator(mode="after")
    def _field_of_its_type(self) -> Self:
        if getattr(self, self.type) is None:
            raise missing(self.type)
        return self


class CreateModerationRequest(TypedDict, total=False):
    """Input (or inputs) to classify, and the model."""

    input: Required[str | list[str] | list[ModerationInput]]
    model: str | None


MODERATION = Schema(CreateModerationRequest)
