"""Sample inputs the tests share: small valid PNGs, and the SDK's deprecation warnings."""

from __future__ import annotations

import struct
import zlib

import pytest

_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # bytes a pixel at 8 bits, by PNG colour type


def chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC."""
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def png(side: int = 1) -> bytes:
    """A valid square RGBA PNG of `side` pixels a side, fully transparent."""
    return png_of(side, side)


def png_of(width: int, height: int, *, colour: int = 6, trns: bool = False) -> bytes:
    """A valid PNG of `width` x `height` zero pixels in `colour` type, with a tRNS if asked."""
    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    rows = b"".join(b"\x00" + b"\x00" * _CHANNELS[colour] * width for _ in range(height))
    extra = chunk(b"PLTE", b"\x00\x00\x00") if colour == 3 else b""
    extra += chunk(b"tRNS", b"\x00\x00" if colour == 0 else b"\x00") if trns else b""
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + extra
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def deprecated() -> pytest.WarningsRecorder:
    """The SDK warns at call time on the Assistants API and image variations."""
    return pytest.warns(DeprecationWarning, match="deprecated")
