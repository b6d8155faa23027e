"""Sample inputs the tests share: small valid PNGs, and the SDK's deprecation warnings."""

from __future__ import annotations

import struct
import zlib

import pytest


def _chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def png(side: int = 1) -> bytes:
    """A valid square RGBA PNG of `side` pixels a side, fully transparent."""
    header = struct.pack(">IIBBBBB", side, side, 8, 6, 0, 0, 0)
    rows = b"".join(b"\x00" + b"\x00\x00\x00\x00" * side for _ in range(side))
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(rows))
        + _chunk(b"IEND", b"")
    )


def deprecated() -> pytest.WarningsRecorder:
    """The SDK warns at call time on the Assistants API and image variations."""
    return pytest.warns(DeprecationWarning, match="deprecated")
