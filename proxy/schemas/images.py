"""The three image operations: generations, edits and variations, and DALL·E's own limits.

Generic constraints (a prompt, `n` from 1 to 10, the enumerated values) hold for every model.
The limits of dall-e-2 and dall-e-3 (prompt length, sizes, `n=1` for dall-e-3, `quality` and
`style`, square transparent PNGs) hold for those models; under `strict` an unknown model is
held to dall-e-2's (the documented default model), under `documented` it is not.

Where the seeds and the spec disagree:
- the seeds allow `quality` `standard` and `hd`; the spec adds `auto` (its default, valid for
  every model) and `low`, `medium`, `high` for the GPT image models. The enum is the spec's;
  dall-e-2 takes `standard` or `auto`, dall-e-3 `standard`, `hd` or `auto`.
- the seeds default an edit's model to dall-e-2; the spec now defaults it to gpt-image-1.5.
  Tollgate follows the seeds (as `proxy/endpoints.py` does), so a model-less edit is held to
  dall-e-2's file rules; send `model` to have a GPT image model's files pass.
- the spec allows up to 16 images in an edit for the GPT image models (`image[]`); dall-e-2
  takes exactly one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Annotated, Literal, Required

from pydantic import Field
from typing_extensions import TypedDict

from proxy.errors import InvalidRequest
from proxy.png import NotPng, Png
from proxy.schemas.base import File, Schema, UploadedFile
from proxy.settings import ValidationMode

IMAGE_BYTES = 4 * 1024 * 1024  # "less than 4MB"
DEFAULT_MODEL = "dall-e-2"

N = Annotated[int, Field(ge=1, le=10)] | None
Quality = Literal["standard", "hd", "low", "medium", "high", "auto"] | None
ResponseFormat = Literal["url", "b64_json"] | None
OutputFormat = Literal["png", "jpeg", "webp"] | None
Background = Literal["transparent", "opaque", "auto"] | None
PartialImages = Annotated[int, Field(ge=0, le=3)] | None


@dataclass(frozen=True, slots=True)
class Family:
    """The documented limits of one DALL·E model."""

    name: str
    prompt: int
    sizes: tuple[str, ...]
    max_n: int
    qualities: tuple[str, ...]
    style: bool


DALL_E_2 = Family(
    "dall-e-2", 1000, ("256x256", "512x512", "1024x1024"), 10, ("standard", "auto"), False
)
DALL_E_3 = Family(
    "dall-e-3", 4000, ("1024x1024", "1792x1024", "1024x1792"), 1, ("standard", "hd", "auto"), True
)
FAMILIES: Mapping[str, Family] = MappingProxyType({f.name: f for f in (DALL_E_2, DALL_E_3)})


def family(model: str | None, mode: ValidationMode) -> Family | None:
    """The DALL·E limits `model` is held to, or None for a model left to upstream."""
    known = FAMILIES.get(model or DEFAULT_MODEL)
    if known is not None:
        return known
    return DALL_E_2 if mode == "strict" else None


def _listed(values: tuple[str, ...]) -> str:
    """`a, b, and c` as OpenAI lists supported values."""
    if len(values) < 3:
        return " and ".join(values)
    return ", ".join(values[:-1]) + ", and " + values[-1]


# The refusals of the model's own limits. The rules below compare inline and build one only
# when a limit is broken: a call for each comparison would cost as much as the comparing.


def prompt_too_long(limits: Family) -> InvalidRequest:
    """Over the model's prompt length."""
    return InvalidRequest(
        f"'prompt' is too long. Maximum length is {limits.prompt} characters.",
        param="prompt",
        code="string_above_max_length",
    )


def too_many_images(limits: Family) -> InvalidRequest:
    """dall-e-3 makes one image a request."""
    return InvalidRequest(
        f"You must provide n={limits.max_n} for this model.",
        param="n",
        code="integer_above_max_value",
    )


def unsupported_size(size: str, limits: Family) -> InvalidRequest:
    """Not one of the model's sizes."""
    return InvalidRequest(
        f"Invalid size '{size}'. Supported sizes are {_listed(limits.sizes)}.",
        param="size",
        code="invalid_value",
    )


def _only_for_dall_e_3(name: str, value: str) -> InvalidRequest:
    return InvalidRequest(
        f"Invalid '{name}': '{value}' is not supported for this model. "
        f"This parameter is only supported for dall-e-3.",
        param=name,
        code="invalid_value",
    )


def check_quality_and_style(quality: str | None, style: str | None, limits: Family) -> None:
    """`hd` and `style` are dall-e-3's; GPT image qualities are for no DALL·E model."""
    if quality is not None and quality not in limits.qualities:
        if quality == "hd":
            raise _only_for_dall_e_3("quality", quality)
        raise InvalidRequest(
            f"Invalid value: '{quality}'. Supported values for {limits.name} are: "
            f"{_listed(tuple(repr(q) for q in limits.qualities))}.",
            param="quality",
            code="invalid_value",
        )
    if style is not None and not limits.style:
        raise _only_for_dall_e_3("style", style)


def png_under_limit(file: UploadedFile, param: str) -> Png:
    """A valid PNG of less than 4 MB, or OpenAI's refusal naming `param`."""
    refusal = InvalidRequest(
        f"Invalid '{param}': uploaded {param} must be a valid PNG and less than 4 MB.",
        param=param,
        code="invalid_image_format",
    )
    if file.size is None or file.size >= IMAGE_BYTES:
        raise refusal
    try:
        return file.png()
    except NotPng:
        raise refusal from None


def check_square(image: Png) -> None:
    """DALL·E's inputs are square."""
    if image.width != image.height:
        raise InvalidRequest(
            f"Invalid 'image': uploaded image must be square, "
            f"but it is {image.width}x{image.height}.",
            param="image",
            code="invalid_image_dimensions",
        )


def single(image: UploadedFile | list[UploadedFile]) -> UploadedFile:
    """The one image dall-e-2 takes."""
    if isinstance(image, UploadedFile):
        return image
    if len(image) == 1:
        return image[0]
    raise InvalidRequest(
        f"Invalid 'image': dall-e-2 takes exactly one image, but got {len(image)} instead.",
        param="image",
        code="invalid_value",
    )


def refuse_dall_e_3(model: str | None, operation: str) -> None:
    """Edits and variations are dall-e-2's among the DALL·E models."""
    if model == "dall-e-3":
        raise InvalidRequest(
            f"Invalid 'model': dall-e-3 does not support image {operation}. "
            "Only dall-e-2 is supported at this time.",
            param="model",
            code="invalid_value",
        )


class CreateImageRequest(TypedDict, total=False):
    """POST /v1/images/generations."""

    prompt: Required[str]
    model: str | None
    n: N
    quality: Quality
    response_format: ResponseFormat
    size: str | None
    style: Literal["vivid", "natural"] | None
    user: str | None
    output_format: OutputFormat
    output_compression: int | None
    stream: bool | None
    partial_images: PartialImages
    moderation: Literal["low", "auto"] | None
    background: Background


def _generation_rules(body: CreateImageRequest, mode: ValidationMode) -> None:
    limits = family(body.get("model"), mode)
    if limits is None:
        return
    n, size, quality, style = (
        body.get("n"),
        body.get("size"),
        body.get("quality"),
        body.get("style"),
    )
    if len(body["prompt"]) > limits.prompt:
        raise prompt_too_long(limits)
    if n is not None and n > limits.max_n:
        raise too_many_images(limits)
    if size is not None and size not in limits.sizes:
        raise unsupported_size(size, limits)
    if quality is not None or style is not None:
        check_quality_and_style(quality, style, limits)


class CreateImageEditRequest(TypedDict, total=False):
    """POST /v1/images/edits (multipart)."""

    image: Required[File | Annotated[list[File], Field(min_length=1, max_length=16)]]
    prompt: Required[str]
    mask: File | None
    model: str | None
    n: N
    size: str | None
    response_format: ResponseFormat
    user: str | None
    background: Background
    output_format: OutputFormat
    output_compression: int | None
    stream: bool | None
    partial_images: PartialImages
    quality: Quality


def _file_limits(model: str | None, operation: str, mode: ValidationMode) -> Family | None:
    """The limits an edit or a variation is held to (dall-e-3 takes neither)."""
    refuse_dall_e_3(model, operation)
    return family(model, mode)


def _check_size(size: str | None, limits: Family) -> None:
    if size is not None and size not in limits.sizes:
        raise unsupported_size(size, limits)


def _edit_rules(body: CreateImageEditRequest, mode: ValidationMode) -> None:
    limits = _file_limits(body.get("model"), "edits", mode)
    if limits is None:
        return
    if len(body["prompt"]) > limits.prompt:
        raise prompt_too_long(limits)
    _check_size(body.get("size"), limits)
    image = png_under_limit(single(body["image"]), "image")
    check_square(image)
    mask = body.get("mask")
    if mask is None:
        _check_transparent(image)
    else:
        _check_mask(image, png_under_limit(mask, "mask"))


def _check_transparent(image: Png) -> None:
    if not image.transparent:
        raise InvalidRequest(
            "Invalid 'image': without a mask, the image must have transparency (an alpha "
            "channel or a tRNS chunk), which will be used as the mask.",
            param="image",
            code="invalid_image_format",
        )


def _check_mask(image: Png, mask: Png) -> None:
    if (mask.width, mask.height) != (image.width, image.height):
        raise InvalidRequest(
            f"Invalid 'mask': the mask must have the same dimensions as the image "
            f"({image.width}x{image.height}), but it is {mask.width}x{mask.height}.",
            param="mask",
            code="invalid_image_dimensions",
        )


class CreateImageVariationRequest(TypedDict, total=False):
    """POST /v1/images/variations (multipart)."""

    image: Required[File]
    model: str | None
    n: N
    response_format: ResponseFormat
    size: Literal["256x256", "512x512", "1024x1024"] | None
    user: str | None


def _variation_rules(body: CreateImageVariationRequest, mode: ValidationMode) -> None:
    limits = _file_limits(body.get("model"), "variations", mode)
    if limits is None:
        return
    _check_size(body.get("size"), limits)
    check_square(png_under_limit(body["image"], "image"))


GENERATION = Schema(CreateImageRequest, _generation_rules)
EDIT = Schema(CreateImageEditRequest, _edit_rules)
VARIATION = Schema(CreateImageVariationRequest, _variation_rules)
