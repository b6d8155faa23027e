"""Reading multipart forms: the text fields at a form's head, or a whole form held aside.

A streamed form (`read_form_head`) is read only up to its first file part, so its files can
stream on. A held form is scanned for its delimiters as its bytes go by (`Delimiters`), then
split into parts from those offsets (`split_form`), reading only part headers and text values.
"""

from __future__ import annotations

import codecs
import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import StreamReader

_NAME = re.compile(rb'(?:^|;)\s*name="([^"]*)"', re.IGNORECASE)
_FILENAME = re.compile(rb"(?:^|;)\s*filename\*?=", re.IGNORECASE)
_FILENAME_VALUE = re.compile(rb'(?:^|;)\s*filename="([^"]*)"', re.IGNORECASE)
_DISPOSITION = re.compile(rb"^content-disposition:(.*)$", re.IGNORECASE | re.MULTILINE)

HEADERS_LIMIT = 16 * 1024  # a part's headers; past it, the part is malformed and skipped
TEXT_LIMIT = 1024 * 1024  # a text value is cut here: every documented text limit is far below


@dataclass(frozen=True, slots=True)
class FormHead:
    """The bytes read so far and the text fields found in them, in order."""

    prefix: bytes
    fields: dict[str, str]
    complete: bool  # True when a file part or the form's end was reached: no text field follows
    first_file: str | None = None  # the name of the first file part, when one was reached


@dataclass(frozen=True, slots=True)
class FormFile:
    """A file part: its field name, its filename, and where its bytes lie in a held form.

    `span` (start, length) is None for a file that streams on unread.
    """

    name: str
    filename: str | None
    span: tuple[int, int] | None


@dataclass(frozen=True, slots=True)
class Form:
    """A whole form: its text fields, and its file parts in order."""

    fields: dict[str, str]
    files: tuple[FormFile, ...]


def boundary_of(content_type_params: dict[str, str]) -> bytes | None:
    """The multipart boundary from the parsed Content-Type parameters, if one is usable."""
    boundary = content_type_params.get("boundary", "")
    if not boundary or len(boundary) > 70:
        return None
    return boundary.encode("latin-1", errors="replace")


def _disposition(head: bytes) -> tuple[str, str | None, bool] | None:
    """(name, filename, is_file) from a part's headers, or None when they are malformed."""
    disposition = _DISPOSITION.search(head.strip())
    if disposition is None:
        return None
    name = _NAME.search(disposition.group(1))
    if name is None:
        return None
    filename = _FILENAME_VALUE.search(disposition.group(1))
    is_file = _FILENAME.search(disposition.group(1)) is not None
    text = filename.group(1).decode("utf-8", errors="replace") if filename else None
    return _text(name.group(1), name.group(1)), text, is_file


def _part(piece: bytes) -> tuple[str, bool, bytes] | None:
    """(name, is_file, raw value) of a part, or None when its headers are malformed."""
    head, sep, value = piece.partition(b"\r\n\r\n")
    found = _disposition(head)
    if not sep or found is None:
        return None
    name, _filename, is_file = found
    return name, is_file, value.removesuffix(b"\r\n")


class FieldError(ValueError):
    """A text field upstream might read otherwise than Tollgate does."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name
        self.message = message


class RepeatedField(FieldError):
    """A text field appears twice: which one upstream would use cannot be known."""

    def __init__(self, name: str) -> None:
        super().__init__(name, f"'{name}' was given more than once.")


class UndecodableField(FieldError):
    """A field name or text value is not UTF-8: checked as one text, it could reach upstream
    as another."""

    def __init__(self, name: str) -> None:
        super().__init__(name, f"The form field '{name}' is not valid UTF-8.")


def _text(name: bytes, raw: bytes, *, cut: bool = False) -> str:
    """`raw` as UTF-8, or `UndecodableField`; a value `cut` short may end mid-character."""
    try:
        return codecs.getincrementaldecoder("utf-8")().decode(raw, final=not cut)
    except UnicodeDecodeError:
        raise UndecodableField(name.decode("utf-8", errors="replace")) from None


def _add_field(fields: dict[str, str], name: str, value: str) -> None:
    """Add a text field; a second one of the same name is refused, never silently replaced
    (a prompt checked here and another one used upstream would slip past moderation)."""
    if name in fields:
        raise RepeatedField(name)
    fields[name] = value


def _scan(buffer: bytes, boundary: bytes) -> tuple[dict[str, str], bool, str | None]:
    """The text fields before the first file part, whether no more can follow, that file."""
    pieces = buffer.split(b"--" + boundary)
    fields: dict[str, str] = {}
    for piece in pieces[1:-1]:
        part = _part(piece)
        if part is None:
            continue
        name, is_file, value = part
        if is_file:
            return fields, True, name
        _add_field(fields, name, _text(name.encode(), value))
    last = pieces[-1] if len(pieces) > 1 else b""
    if last.startswith(b"--"):
        return fields, True, None
    ahead = _part(last) if b"\r\n\r\n" in last else None
    if ahead and ahead[1]:
        return fields, True, ahead[0]
    return fields, False, None


async def read_form_head(content: StreamReader, boundary: bytes, limit: int) -> FormHead:
    """Read until the first file part, the end, or `limit` bytes; the rest stays unread."""
    buffer = b""
    while len(buffer) < limit:
        chunk = await content.readany()
        if not chunk:
            break
        buffer += chunk
        fields, complete, first_file = _scan(buffer, boundary)
        if complete:
            return FormHead(buffer, fields, True, first_file)
    fields, complete, first_file = _scan(buffer, boundary)
    return FormHead(buffer, fields, complete or content.at_eof(), first_file)


class Delimiters:
    """Finds a form's boundary delimiters (`CRLF--boundary`) in its bytes, chunk by chunk."""

    def __init__(self, boundary: bytes) -> None:
        self.delimiter = b"\r\n--" + boundary
        self.found: list[int] = []  # offsets of each delimiter's CRLF; -2 for one that opens
        self._tail = b"\r\n"  # a form may open with its first delimiter, without a CRLF
        self._offset = -2  # the offset of `_tail` in the form

    def feed(self, chunk: bytes) -> None:
        """Look for delimiters in `chunk` and across the end of the previous one."""
        window = self._tail + chunk
        at = window.find(self.delimiter)
        while at >= 0:
            self.found.append(self._offset + at)
            at = window.find(self.delimiter, at + 1)
        self._tail = window[-(len(self.delimiter) - 1) :]
        self._offset += len(window) - len(self._tail)


Read = Callable[[int, int], bytes]


def _held_part(read: Read, start: int, end: int) -> tuple[str, str | None, bool, int] | None:
    """(name, filename, is_file, value offset) of the part in [start, end), if well formed."""
    line = read(start, min(end - start, 1024))
    if line.startswith(b"--") or b"\r\n" not in line:
        return None  # the closing delimiter, or a part with no line end
    heads_at = start + line.index(b"\r\n") + 2
    head = read(heads_at, min(end - heads_at, HEADERS_LIMIT))
    heads_end = head.find(b"\r\n\r\n")
    found = _disposition(head[:heads_end]) if heads_end >= 0 else None
    if found is None:
        return None
    return (*found, heads_at + heads_end + 4)


def split_form(read: Read, delimiters: Delimiters) -> Form:
    """The text fields and file parts of a held form, from its delimiters' offsets."""
    fields: dict[str, str] = {}
    files: list[FormFile] = []
    width = len(delimiters.delimiter)
    for at, end in itertools.pairwise(delimiters.found):
        part = _held_part(read, at + width, end)
        if part is None:
            continue
        name, filename, is_file, value_at = part
        if is_file:
            files.append(FormFile(name, filename, (value_at, end - value_at)))
        else:
            value = read(value_at, min(end - value_at, TEXT_LIMIT))
            _add_field(fields, name, _text(name.encode(), value, cut=end - value_at > TEXT_LIMIT))
    return Form(fields, tuple(files))
