"""PNG facts (size, colour type, transparency) from the signature and chunk headers alone.

Only the 8-byte signature, the IHDR chunk and the 8-byte header of every other chunk are read;
chunk data is skipped by offset, so pixel data is never read or decoded (and CRCs are not
checked). The bytes come through `read(offset, size)`, so the same walk serves bytes in memory
and a spooled form on disk.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IHDR = struct.Struct(">I4sIIBB")  # length, type, width, height, bit depth, colour type
_CHUNK = struct.Struct(">I4s")  # length, type
_COLOUR_TYPES = frozenset({0, 2, 3, 4, 6})  # grey, RGB, palette, grey+alpha, RGB+alpha
_ALPHA_TYPES = frozenset({4, 6})
_MAX_CHUNK = 2**31 - 1  # PNG chunk lengths are at most 2^31 - 1

Read = Callable[[int, int], bytes]


class NotPng(ValueError):
    """The bytes are not a well-formed PNG (signature, IHDR or chunk structure)."""


@dataclass(frozen=True, slots=True)
class Png:
    """What the image checks need to know about a PNG."""

    width: int
    height: int
    colour_type: int
    has_trns: bool

    @property
    def transparent(self) -> bool:
        """An alpha channel (colour types 4 and 6) or a tRNS chunk."""
        return self.colour_type in _ALPHA_TYPES or self.has_trns


def _header(read: Read, length: int) -> tuple[int, int, int]:
    """Width, height and colour type from the signature and a well-formed IHDR."""
    head = read(0, len(SIGNATURE) + _IHDR.size)
    if length < len(head) or len(head) < len(SIGNATURE) + _IHDR.size:
        raise NotPng("too short for a PNG")
    if not head.startswith(SIGNATURE):
        raise NotPng("no PNG signature")
    size, kind, width, height, _depth, colour = _IHDR.unpack(head[len(SIGNATURE) :])
    if kind != b"IHDR" or size != 13:
        raise NotPng("the first chunk is not IHDR")
    if width == 0 or height == 0 or colour not in _COLOUR_TYPES:
        raise NotPng("IHDR has no size or an unknown colour type")
    return width, height, colour


def _chunks_after_ihdr(read: Read, length: int) -> bool:
    """Walk every chunk header up to IEND; whether a tRNS chunk was seen."""
    offset = len(SIGNATURE) + 8 + 13 + 4
    trns = False
    while offset + _CHUNK.size + 4 <= length:
        size, kind = _CHUNK.unpack(read(offset, _CHUNK.size))
        if size > _MAX_CHUNK or not kind.isalpha():
            raise NotPng("a chunk header is malformed")
        if kind == b"IEND":
            return trns
        trns = trns or kind == b"tRNS"
        offset += _CHUNK.size + size + 4
    raise NotPng("the file ends before IEND")


def inspect(read: Read, length: int) -> Png:
    """The facts of the PNG in the first `length` bytes `read` gives, or `NotPng`."""
    width, height, colour = _header(read, length)
    return Png(width, height, colour, _chunks_after_ihdr(read, length))


def inspect_bytes(data: bytes) -> Png:
    """`inspect` over bytes in memory."""
    return inspect(lambda offset, size: data[offset : offset + size], len(data))
