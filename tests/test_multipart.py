"""Held forms: delimiters are found wherever chunks split them, and parts come out whole."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from proxy.multipart import Delimiters, FormFile, split_form

BOUNDARY = b"----tollgate0123"


def _form(fields: dict[str, bytes], files: dict[str, bytes]) -> bytes:
    out = b""
    for name, value in fields.items():
        out += b"--" + BOUNDARY + b"\r\n"
        out += f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + value + b"\r\n"
    for name, value in files.items():
        out += b"--" + BOUNDARY + b"\r\n"
        disposition = f'Content-Disposition: form-data; name="{name}"; filename="{name}.bin"'
        out += disposition.encode() + b"\r\nContent-Type: application/octet-stream\r\n\r\n"
        out += value + b"\r\n"
    return out + b"--" + BOUNDARY + b"--\r\n"


def _split(body: bytes, cuts: list[int]) -> tuple[dict[str, str], tuple[FormFile, ...]]:
    delimiters = Delimiters(BOUNDARY)
    edges = [0, *sorted(cut % (len(body) + 1) for cut in cuts), len(body)]
    for start, end in itertools.pairwise(edges):
        delimiters.feed(body[start:end])
    form = split_form(lambda offset, size: body[offset : offset + size], delimiters)
    return form.fields, form.files


names = st.sampled_from(["prompt", "n", "model", "size", "user"])
values = st.binary(max_size=200).filter(lambda v: b"\r\n--" not in v)


@given(
    fields=st.dictionaries(names, st.text(alphabet="abc xyz123", max_size=50).map(str.encode)),
    files=st.dictionaries(st.sampled_from(["image", "mask"]), values),
    cuts=st.lists(st.integers(min_value=0), max_size=12),
)
def test_any_chunking_finds_every_part(
    fields: dict[str, bytes], files: dict[str, bytes], cuts: list[int]
) -> None:
    """However the body is cut into chunks, the same text fields and file bytes come out."""
    body = _form(fields, files)
    found_fields, found_files = _split(body, cuts)
    assert found_fields == {name: value.decode() for name, value in fields.items()}
    assert [file.name for file in found_files] == list(files)
    for file in found_files:
        assert file.span is not None
        start, length = file.span
        assert body[start : start + length] == files[file.name]
        assert file.filename == f"{file.name}.bin"


def test_a_preamble_and_malformed_parts_are_skipped() -> None:
    """Bytes before the first delimiter, and parts without a name, are not fields."""
    body = b"preamble\r\n" + _form({"prompt": b"otter"}, {}).replace(
        b"--" + BOUNDARY + b"--",
        b"--" + BOUNDARY + b"\r\nX-Nothing: 1\r\n\r\nv\r\n--" + BOUNDARY + b"--",
    )
    assert _split(body, []) == ({"prompt": "otter"}, ())


def test_an_unterminated_part_is_not_a_field() -> None:
    """A form cut off before its closing delimiter keeps only its complete parts."""
    body = _form({"prompt": b"otter", "n": b"2"}, {})
    cut = body[: body.rindex(b'name="n"')]
    assert _split(cut, [])[0] == {"prompt": "otter"}
