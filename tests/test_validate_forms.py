"""Validating multipart forms: image files are checked from a held (spooled) form before a
byte goes upstream, then sent whole with their length; upload parts still stream.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest

from tests.conftest import CLIENT_KEY, MakeProxy, Proxy, Upstream, sent_on
from tests.samples import chunk, deprecated, png, png_of

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 64
PROMPT = "A cute baby sea otter wearing a beret"


def big_png(size: int) -> bytes:
    """A well-formed 2x2 RGBA PNG padded to about `size` bytes by one large IDAT chunk."""
    return png(2)[:33] + chunk(b"IDAT", b"\x00" * size) + chunk(b"IEND", b"")


def form(*parts: tuple[str, bytes, str | None]) -> bytes:
    """A multipart body (boundary `b`) of (name, value, filename) parts, in order."""
    out = b""
    for name, value, filename in parts:
        file = f'; filename="{filename}"' if filename else ""
        out += f'--b\r\nContent-Disposition: form-data; name="{name}"{file}\r\n\r\n'.encode()
        out += value + b"\r\n"
    return out + b"--b--\r\n"


FORM_HEADERS = {**AUTH, "Content-Type": "multipart/form-data; boundary=b"}


async def post_form(proxy: Proxy, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
    """POST a raw multipart body; the status and the JSON answer's `error` (or {})."""
    async with aiohttp.ClientSession() as client:
        async with client.post(proxy.url(path), data=body, headers=FORM_HEADERS) as response:
            answer = await response.json()
            error: dict[str, Any] = answer.get("error") or {}
            return response.status, error


async def refused_edit(sdk: openai.AsyncOpenAI, **kwargs: object) -> openai.BadRequestError:
    """The SDK's BadRequestError for an images.edit."""
    with pytest.raises(openai.BadRequestError) as raised:
        await sdk.images.edit(prompt=PROMPT, **kwargs)  # type: ignore[call-overload]
    return raised.value


@pytest.mark.parametrize(
    ("kwargs", "param", "words"),
    [
        ({"image": ("o.jpg", JPEG, "image/jpeg")}, "image", "must be a valid PNG"),
        ({"image": ("o.png", png(2)[:-12], "image/png")}, "image", "must be a valid PNG"),
        ({"image": ("o.png", big_png(4 * 1024 * 1024), "image/png")}, "image", "less than 4 MB"),
        ({"image": ("o.png", png_of(4, 2), "image/png")}, "image", "must be square"),
        ({"image": ("o.png", png_of(4, 4, colour=2), "image/png")}, "image", "transparency"),
        (
            {"image": ("o.png", png(4), "image/png"), "mask": ("m.png", png(2), "image/png")},
            "mask",
            "same dimensions as the image (4x4), but it is 2x2",
        ),
        (
            {"image": ("o.png", png(4), "image/png"), "mask": ("m.jpg", JPEG, "image/jpeg")},
            "mask",
            "must be a valid PNG",
        ),
        ({"image": ("o.png", png(2), "image/png"), "model": "dall-e-3"}, "model", "dall-e-2"),
        ({"image": ("o.png", png(2), "image/png"), "n": 11}, "n", "<= 10"),
        ({"image": ("o.png", png(2), "image/png"), "size": "1792x1024"}, "size", "256x256"),
        (
            {"image": ("o.png", png(2), "image/png"), "response_format": "png"},
            "response_format",
            "'url' and 'b64_json'",
        ),
    ],
    ids=[
        "not-png",
        "truncated-png",
        "4-mb",
        "square",
        "transparency-without-mask",
        "mask-dimensions",
        "mask-png",
        "dall-e-2-only",
        "n-range",
        "sizes",
        "response-format",
    ],
)
async def test_image_edit_constraints(
    sdk: openai.AsyncOpenAI,
    upstream: Upstream,
    kwargs: dict[str, object],
    param: str,
    words: str,
) -> None:
    """An edit breaking a documented rule of its files or fields is refused, nothing sent."""
    error = await refused_edit(sdk, **kwargs)
    assert error.param == param
    assert words in error.message
    assert upstream.state.received == []


async def test_an_edit_prompt_is_at_most_1000_characters(
    sdk: openai.AsyncOpenAI, upstream: Upstream
) -> None:
    """dall-e-2 (the only DALL·E model for edits) takes prompts up to 1000 characters."""
    with pytest.raises(openai.BadRequestError) as raised:
        await sdk.images.edit(image=("o.png", png(2), "image/png"), prompt="x" * 1001)
    assert raised.value.param == "prompt"
    assert "Maximum length is 1000 characters." in raised.value.message
    assert upstream.state.received == []


@pytest.mark.parametrize(
    ("image", "mask"),
    [
        (png(4), None),
        (png_of(4, 4, colour=2, trns=True), None),
        (png_of(4, 4, colour=0, trns=True), None),
        (png_of(4, 4, colour=2), png(4)),
    ],
    ids=["rgba", "rgb-with-trns", "grey-with-trns", "opaque-with-mask"],
)
async def test_valid_edits_pass(
    sdk: openai.AsyncOpenAI, upstream: Upstream, image: bytes, mask: bytes | None
) -> None:
    """Square PNGs with transparency, or with a mask of the same size, reach upstream."""
    if mask is None:
        await sdk.images.edit(image=("o.png", image, "image/png"), prompt=PROMPT)
    else:
        await sdk.images.edit(
            image=("o.png", image, "image/png"), mask=("m.png", mask, "image/png"), prompt=PROMPT
        )
    [seen] = sent_on(upstream)
    assert image in seen.body


async def test_the_mask_is_checked_though_it_comes_after_the_image(
    proxy: Proxy, upstream: Upstream
) -> None:
    """The whole form is held first: a bad mask after a good image still sends nothing."""
    body = form(("image", png(4), "o.png"), ("prompt", b"otter", None), ("mask", png(8), "m.png"))
    status, answer = await post_form(proxy, "/v1/images/edits", body)
    assert status == 400
    assert answer["param"] == "mask"
    assert upstream.state.received == []


async def test_an_edit_needs_an_image(proxy: Proxy, upstream: Upstream) -> None:
    """A form without the `image` file is missing a required parameter."""
    status, answer = await post_form(proxy, "/v1/images/edits", form(("prompt", b"o", None)))
    assert status == 400
    assert answer == {
        "message": "Missing required parameter: 'image'.",
        "type": "invalid_request_error",
        "param": "image",
        "code": "missing_required_parameter",
    }
    assert upstream.state.received == []


async def test_dall_e_2_takes_one_image(proxy: Proxy, upstream: Upstream) -> None:
    """Two `image[]` files are refused for dall-e-2, and accepted for a GPT image model."""
    images = (("image[]", png(2), "a.png"), ("image[]", png(2), "b.png"))
    status, answer = await post_form(
        proxy, "/v1/images/edits", form(*images, ("prompt", b"o", None))
    )
    assert (status, answer["param"]) == (400, "image")
    body = form(*images, ("prompt", b"o", None), ("model", b"gpt-image-1", None))
    status, _ = await post_form(proxy, "/v1/images/edits", body)
    assert status == 200
    assert len(sent_on(upstream)) == 1


async def test_documented_leaves_gpt_image_files_to_upstream(
    make_proxy: MakeProxy, upstream: Upstream
) -> None:
    """A JPEG edit for gpt-image-1 passes under `documented`; `strict` holds it to dall-e-2."""
    for mode, expected in (("documented", 200), ("strict", 400)):
        proxy = await make_proxy(validation=mode)
        body = form(
            ("image", JPEG, "o.jpg"), ("prompt", b"o", None), ("model", b"gpt-image-1", None)
        )
        status, _ = await post_form(proxy, "/v1/images/edits", body)
        assert status == expected
    assert len(sent_on(upstream)) == 1


@pytest.mark.parametrize(
    ("image", "options", "param", "words"),
    [
        (JPEG, {}, "image", "must be a valid PNG"),
        (png_of(8, 4), {}, "image", "must be square"),
        (big_png(4 * 1024 * 1024), {}, "image", "less than 4 MB"),
        (png(2), {"n": 11}, "n", "Expected a value <= 10, but got 11 instead."),
        (png(2), {"size": "1792x1024"}, "size", "'256x256', '512x512', and '1024x1024'"),
        (png(2), {"model": "dall-e-3"}, "model", "Only dall-e-2 is supported"),
    ],
    ids=["not-png", "square", "4-mb", "n-range", "sizes", "dall-e-2-only"],
)
async def test_image_variation_constraints(
    sdk: openai.AsyncOpenAI,
    upstream: Upstream,
    image: bytes,
    options: dict[str, str | int],
    param: str,
    words: str,
) -> None:
    """A variation's image must be a square PNG under 4 MB; n, size and model as documented."""
    with deprecated(), pytest.raises(openai.BadRequestError) as raised:
        await sdk.images.create_variation(image=("o.png", image, "image/png"), extra_body=options)
    assert raised.value.param == param
    assert words in raised.value.message
    assert upstream.state.received == []


async def test_an_edit_needs_a_prompt(proxy: Proxy, upstream: Upstream) -> None:
    """A form without `prompt` is missing a required parameter, whatever its image."""
    status, answer = await post_form(proxy, "/v1/images/edits", form(("image", png(2), "o.png")))
    assert (status, answer["param"], answer["code"]) == (
        400,
        "prompt",
        "missing_required_parameter",
    )
    assert upstream.state.received == []


async def test_a_variation_needs_no_transparency(
    sdk: openai.AsyncOpenAI, upstream: Upstream
) -> None:
    """An opaque square PNG is a valid variation input."""
    with deprecated():
        await sdk.images.create_variation(image=("o.png", png_of(4, 4, colour=2), "image/png"))
    assert len(sent_on(upstream)) == 1


async def test_a_held_edit_still_gets_exactly_one_user(
    sdk: openai.AsyncOpenAI, upstream: Upstream
) -> None:
    """The spooled form gets the pseudonymous `user` part once, and the image intact."""
    picture = png(4)
    await sdk.images.edit(image=("o.png", picture, "image/png"), prompt=PROMPT)
    [seen] = sent_on(upstream)
    assert seen.body.count(b'name="user"') == 1
    assert re.search(rb'name="user"\r\n\r\ntg-user-[0-9a-f]{32}\r\n', seen.body)
    assert picture in seen.body
    assert seen.headers["Content-Length"] == str(len(seen.body))


async def test_a_large_held_form_is_sent_whole_with_its_length(
    proxy: Proxy, upstream: Upstream
) -> None:
    """A chunked form past the 1 MiB memory spool reaches upstream whole, with its length."""
    body = form(("prompt", b"otter", None), ("image", big_png(3 * 1024 * 1024), "o.png"))

    async def chunked() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 100_000):
            yield body[start : start + 100_000]

    async with aiohttp.ClientSession() as client:
        url = proxy.url("/v1/images/edits")
        async with client.post(url, data=chunked(), headers=FORM_HEADERS) as response:
            assert response.status == 200
    [seen] = sent_on(upstream)
    assert seen.body.endswith(body)
    assert seen.body[: -len(body)].startswith(b'--b\r\nContent-Disposition: form-data; name="user"')
    assert seen.headers["Content-Length"] == str(len(seen.body))
    assert "Transfer-Encoding" not in seen.headers
    assert json.loads(proxy.log_lines()[-1])["bytes_in"] == len(body)


async def test_a_held_form_over_the_limit_is_a_413_and_sends_nothing(
    make_proxy: MakeProxy, upstream: Upstream
) -> None:
    """Spooling is bounded by the request size limit; past it, 413 before anything is sent."""
    proxy = await make_proxy(max_request_bytes=64 * 1024)
    body = form(("prompt", b"otter", None), ("image", big_png(100_000), "o.png"))

    async def chunked() -> AsyncIterator[bytes]:
        yield body

    async with aiohttp.ClientSession() as client:
        url = proxy.url("/v1/images/edits")
        async with client.post(url, data=chunked(), headers=FORM_HEADERS) as response:
            assert response.status == 413
    assert upstream.state.received == []


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        (
            form(("data", b"chunk", None)),
            "data",
            "Invalid type for 'data': expected a file, but got a string instead.",
        ),
        (form(("file", b"chunk", "part.bin")), "data", "Missing required parameter: 'data'."),
        (b"not a form at all", "data", "Missing required parameter: 'data'."),
        (
            form(("purpose", b"x", None), ("data", b"chunk", "part.bin")),
            "purpose",
            "Unknown parameter: 'purpose'.",
        ),
    ],
    ids=["data-is-not-a-file", "another-file", "no-form", "field-before-data"],
)
async def test_an_upload_part_needs_its_data_file(
    proxy: Proxy, upstream: Upstream, body: bytes, param: str, words: str
) -> None:
    """An upload part's form must carry the file `data`, and nothing else before it."""
    status, answer = await post_form(proxy, "/v1/uploads/upload_1/parts", body)
    assert status == 400
    assert answer["param"] == param
    assert answer["message"] == words
    assert upstream.state.received == []


async def test_with_validation_off_upload_parts_stream_untouched(
    make_proxy: MakeProxy, upstream: Upstream
) -> None:
    """Validation `off` forwards any upload part body as it comes, as before."""
    proxy = await make_proxy(validation="off")
    status, _ = await post_form(proxy, "/v1/uploads/upload_1/parts", b"not a form at all")
    assert status == 200
    assert upstream.state.received[-1].body == b"not a form at all"
