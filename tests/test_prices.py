"""The price table: OpenAI's image prices by default, per-operation prices, worst-case forms."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from proxy.call import Call
from proxy.prices import MAX_IMAGES, PriceTable, images_asked


def image(model: str, size: str, quality: str | None = None, n: int = 1) -> Call:
    return Call("images.generate", True, model=model, n=n, size=size, quality=quality)


@pytest.mark.parametrize(
    ("model", "size", "quality", "micros"),
    [
        ("dall-e-3", "1024x1024", "standard", 40_000),
        ("dall-e-3", "1024x1792", "standard", 80_000),
        ("dall-e-3", "1792x1024", None, 80_000),
        ("dall-e-3", "1024x1024", "hd", 80_000),
        ("dall-e-3", "1792x1024", "hd", 120_000),
        ("dall-e-3", "1024x1792", "hd", 120_000),
        ("dall-e-2", "1024x1024", None, 20_000),
        ("dall-e-2", "512x512", "standard", 18_000),
        ("dall-e-2", "256x256", None, 16_000),
    ],
)
def test_default_image_prices_are_openais(
    model: str, size: str, quality: str | None, micros: int
) -> None:
    """Published prices per image, by model, size and quality."""
    assert PriceTable().cost(image(model, size, quality), 1) == micros


def test_an_image_request_costs_its_price_times_n() -> None:
    """n images cost n times one."""
    assert PriceTable().cost(image("dall-e-2", "256x256", n=3), 3) == 48_000


def test_edits_and_variations_are_priced_like_dall_e_2() -> None:
    """The form operations use the same table."""
    variation = Call("images.create_variation", True, model="dall-e-2", n=2, size="512x512")
    assert PriceTable().cost(variation, 2) == 36_000


def test_an_unknown_size_costs_the_models_dearest_image() -> None:
    """Never less than it could cost."""
    assert PriceTable().cost(image("dall-e-3", "4096x4096", "hd"), 1) == 120_000


def test_other_operations_are_free_unless_configured() -> None:
    """Moderations and pass-through cost nothing by default; patterns set a price per request."""
    moderation = Call("moderations.create", True)
    passthrough = Call("passthrough", False)
    assert PriceTable().cost(moderation, 0) == 0
    assert PriceTable().cost(passthrough, 0) == 0
    table = PriceTable.model_validate({"operations": {"passthrough": 0.01, "beta.*": "0.002"}})
    assert table.cost(passthrough, 0) == 10_000
    assert table.cost(Call("beta.threads.create", True), 0) == 2_000
    assert table.cost(moderation, 0) == 0


def test_configured_image_prices_replace_defaults_model_by_model() -> None:
    """A model in the config replaces that model's defaults; the others stay."""
    table = PriceTable.model_validate({"images": {"gpt-image-1": {"high": {"1024x1024": 0.167}}}})
    assert table.cost(image("gpt-image-1", "1024x1024", "high"), 1) == 167_000
    assert table.cost(image("dall-e-3", "1024x1024"), 1) == 40_000
    with pytest.raises(ValidationError, match="no sizes"):
        PriceTable.model_validate({"images": {"dall-e-2": {"standard": {}}}})
    with pytest.raises(ValidationError, match="decimals"):
        PriceTable.model_validate({"operations": {"passthrough": 0.0000001}})


def test_an_image_model_without_prices_falls_back_to_its_operation_price() -> None:
    """Unknown image models cost the operation's per-request price (zero by default)."""
    table = PriceTable.model_validate({"operations": {"images.*": 0.5}})
    assert table.cost(image("new-model", "1024x1024"), 2) == 500_000
    assert PriceTable().cost(image("new-model", "1024x1024"), 2) == 0


def test_a_form_whose_fields_were_not_all_read_is_priced_at_its_worst() -> None:
    """Fields after the file were not seen: the dearest image, and `n` at its maximum."""
    edit = Call("images.edit", True, model="dall-e-2", n=1, size="256x256", fields_complete=False)
    assert images_asked(edit, {"prompt": "x"}) == MAX_IMAGES
    assert images_asked(edit, {"prompt": "x", "n": "2"}) == 1  # n was read: the Call has it
    assert PriceTable().cost(edit, MAX_IMAGES) == 20_000 * MAX_IMAGES


def test_only_image_operations_ask_for_images() -> None:
    """n counts on image operations only."""
    assert images_asked(Call("models.list", True), {}) == 0
    assert images_asked(image("dall-e-2", "256x256", n=4), {}) == 4
