"""Reading the text fields at the head of a multipart form without holding its files."""

from __future__ import annotations

import re
from dataclasses import dataclass

from aiohttp import StreamReader

_NAME = re.compile(rb'(?:^|;)\s*name="([^"]*)"', re.IGNORECASE)
_FILENAME = re.compile(rb"(?:^|;)\s*filename\*?=", re.IGNORECASE)
_DISPOSITION = re.compile(rb"^content-disposition:(.*)$", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True, slots=True)
class FormHead:
    """The bytes read so far and the text fields found in them, in order."""

    prefix: bytes
    fields: dict[str, str]
    complete: bool  # True when a file part or the form's end was reached: no text field follows


def boundary_of(content_type_params: dict[str, str]) -> bytes | None:
    """The multipart boundary from the parsed Content-Type parameters, if one is usable."""
    boundary = content_type_params.get("boundary", "")
    if not boundary or len(boundary) > 70:
        return None
    return boundary.encode("latin-1", errors="replace")


def _part(piece: bytes) -> tuple[str, bool, str] | None:
    """(name, is_file, value) of one complete part, or None when its headers are malformed."""
    head, sep, value = piece.partition(b"\r\n\r\n")
    disposition = _DISPOSITION.search(head.strip())
    if not sep or disposition is None:
        return None
    name = _NAME.search(disposition.group(1))
    if name is None:
        return None
    is_file = _FILENAME.search(disposition.group(1)) is not None
    text = value.removesuffix(b"\r\n").decode("utf-8", errors="replace")
    return name.group(1).decode("utf-8", errors="replace"), is_file, text


def _scan(buffer: bytes, boundary: bytes) -> tuple[dict[str, str], bool]:
    """The text fields before the first file part, and whether no more can follow."""
    pieces = buffer.split(b"--" + boundary)
    fields: dict[str, str] = {}
    for piece in pieces[1:-1]:
        part = _part(piece)
        if part is None:
            continue
        name, is_file, value = part
        if is_file:
            return fields, True
        fields[name] = value
    last = pieces[-1] if len(pieces) > 1 else b""
    if last.startswith(b"--"):
        return fields, True
    ahead = _part(last) if b"\r\n\r\n" in last else None
    return fields, bool(ahead and ahead[1])


async def read_form_head(content: StreamReader, boundary: bytes, limit: int) -> FormHead:
    """Read until the first file part, the end, or `limit` bytes; the rest stays unread."""
    buffer = b""
    while len(buffer) < limit:
        chunk = await content.readany()
        if not chunk:
            break
        buffer += chunk
        fields, complete = _scan(buffer, boundary)
        if complete:
            return FormHead(buffer, fields, True)
    fields, complete = _scan(buffer, boundary)
    return FormHead(buffer, fields, complete or content.at_eof())
