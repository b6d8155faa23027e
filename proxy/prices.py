"""The price table: what a request costs in micro-dollars, known before it is sent.

Image operations cost a price per image (by model, quality and size) times `n`; every other
operation costs a price per request matched by operation pattern, zero unless configured
(moderations are free; pass-through paths are unknown to Tollgate and priced at zero).
Defaults are OpenAI's published image prices. Money is integer micro-dollars, never floats.

Multipart image forms are priced from the text fields read ahead of the first file part,
where the official SDKs put every field. When that head is too long to read to its end, the
request may ask for more than Tollgate saw: it is priced at the most it could cost (the
model's dearest image, 10 images). Fields sent after the file are not seen before the call
(the route room reads no further), so a hand-made form can declare them there unpriced.
"""

from __future__ import annotations

from collections.abc import Mapping
from fnmatch import fnmatchcase
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, field_validator

from proxy.call import IMAGE_OPERATIONS, Call
from proxy.limits import dollars, to_micros

MAX_IMAGES = 10  # the documented maximum `n`

Micros = Annotated[int, BeforeValidator(to_micros), PlainSerializer(dollars)]
SizePrices = dict[str, Micros]  # size -> price of one image
ModelPrices = dict[str, SizePrices]  # quality -> sizes

_DALL_E_3: ModelPrices = {
    "standard": {"1024x1024": 40_000, "1024x1792": 80_000, "1792x1024": 80_000},
    "hd": {"1024x1024": 80_000, "1024x1792": 120_000, "1792x1024": 120_000},
}
_DALL_E_2: ModelPrices = {
    "standard": {"256x256": 16_000, "512x512": 18_000, "1024x1024": 20_000},
}
DEFAULT_IMAGE_PRICES: Mapping[str, ModelPrices] = {"dall-e-3": _DALL_E_3, "dall-e-2": _DALL_E_2}


class PriceTable(BaseModel):
    """The `prices` section of the policy file, in US dollars (read into micro-dollars).

    `images` entries replace the defaults model by model; `operations` maps operation
    patterns (`beta.*`, `passthrough`) to a price per request, first match wins.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    images: dict[str, ModelPrices] = Field(default_factory=lambda: dict(DEFAULT_IMAGE_PRICES))
    operations: dict[str, Micros] = Field(default_factory=dict)

    @field_validator("images")
    @classmethod
    def _over_defaults(cls, images: dict[str, ModelPrices]) -> dict[str, ModelPrices]:
        for model, qualities in images.items():
            if not any(qualities.values()):
                raise ValueError(f"no sizes priced for {model}")
        return {**DEFAULT_IMAGE_PRICES, **images}

    def cost(self, call: Call, images: int) -> int:
        """Micro-dollars that `call`, asking for `images` images, costs."""
        if call.operation in IMAGE_OPERATIONS:
            each = self._per_image(call)
            if each is not None:
                return each * images
        return self._per_request(call.operation)

    def _per_image(self, call: Call) -> int | None:
        qualities = self.images.get(call.model or "dall-e-2")
        if qualities is None:
            return None
        if not call.fields_complete:
            return max(price for sizes in qualities.values() for price in sizes.values())
        sizes = qualities.get(call.quality or "standard") or qualities.get("standard")
        if not sizes:
            sizes = {size: p for prices in qualities.values() for size, p in prices.items()}
        return sizes.get(call.size or "1024x1024", max(sizes.values()))

    def _per_request(self, operation: str) -> int:
        for pattern, price in self.operations.items():
            if fnmatchcase(operation, pattern):
                return price
        return 0


def images_asked(call: Call, fields: Mapping[str, object]) -> int:
    """How many images `call` asks for: `n`, or the most it may ask when `n` was not read."""
    if call.operation not in IMAGE_OPERATIONS:
        return 0
    if not call.fields_complete and "n" not in fields:
        return MAX_IMAGES
    return max(call.n or 1, 1)
