"""PNG facts come from the signature and chunk headers; malformed files are refused."""

from __future__ import annotations

import pytest

from proxy.png import NotPng, inspect, inspect_bytes
from tests.samples import chunk, png, png_of


def test_size_and_alpha_come_from_ihdr() -> None:
    """An RGBA PNG reports its size and counts as transparent."""
    facts = inspect_bytes(png_of(16, 9))
    assert (facts.width, facts.height, facts.colour_type) == (16, 9, 6)
    assert facts.transparent


@pytest.mark.parametrize(("colour", "transparent"), [(0, False), (2, False), (3, False), (4, True)])
def test_transparency_follows_the_colour_type(colour: int, transparent: bool) -> None:
    """Grey+alpha is transparent; grey, RGB and palette images without tRNS are not."""
    assert inspect_bytes(png_of(2, 2, colour=colour)).transparent is transparent


@pytest.mark.parametrize("colour", [0, 2, 3])
def test_a_trns_chunk_makes_an_image_transparent(colour: int) -> None:
    """Colour types without alpha are transparent when they carry a tRNS chunk."""
    assert inspect_bytes(png_of(2, 2, colour=colour, trns=True)).transparent


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"GIF89a" + b"\x00" * 64,
        png(2)[:-12],  # IEND cut off
        png(2)[:20],  # IHDR cut off
        png(2)[:8] + chunk(b"IDAT", b"x") + png(2)[8:],  # IHDR not first
        png(2)[:8] + chunk(b"IHDR", b"\x00" * 13) + png(2)[33:],  # zero size
        png(2)[:33] + b"\x00\x00\x00\x01\x00\x00\x00\x00" + png(2)[33:],  # chunk type not letters
    ],
)
def test_malformed_files_are_not_pngs(data: bytes) -> None:
    """No signature, no IHDR first, a zero size, a bad chunk header or no IEND: not a PNG."""
    with pytest.raises(NotPng):
        inspect_bytes(data)


def test_pixel_data_is_never_read() -> None:
    """Only headers are read: the bytes of a large IDAT chunk are skipped by offset."""
    data = png(2)[:33] + chunk(b"IDAT", b"\xff" * 100_000) + chunk(b"IEND", b"")
    reads: list[tuple[int, int]] = []

    def read(offset: int, size: int) -> bytes:
        reads.append((offset, size))
        return data[offset : offset + size]

    assert inspect(read, len(data)).width == 2
    assert sum(size for _, size in reads) < 100
