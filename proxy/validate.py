"""The validate room: a documented request is checked against the reference before it is sent.

JSON bodies are checked from the fields the route room parsed (`fields`, never parsed again),
strictly typed as JSON is; multipart forms from their text fields, typed loosely as form text
is (`n=2`), and their files (`files`), whose bytes a held form keeps in its spool. A refusal is
OpenAI's 400 `invalid_request_error` with `param` naming the field, and nothing goes upstream.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from proxy.body import Body, SpooledBody
from proxy.context import FACTS, Check
from proxy.multipart import FormFile
from proxy.schemas import SCHEMAS, Schema, UploadedFile
from proxy.settings import ValidationMode
from proxy.wording import refusal


def _uploaded(file: FormFile, body: Body) -> UploadedFile:
    """A file part as the schemas see it: readable when its form was held."""
    if file.span is None or not isinstance(body, SpooledBody):
        return UploadedFile(file.filename, None, None)
    start, length = file.span

    def read(offset: int, size: int) -> bytes:
        return body.read(start + offset, max(0, min(size, length - offset)))

    return UploadedFile(file.filename, length, read)


def form_values(
    fields: Mapping[str, str], files: tuple[FormFile, ...], body: Body
) -> dict[str, object]:
    """Text fields and files by name; `image[]` and repeated names make a list."""
    values: dict[str, object] = dict(fields)
    by_name: dict[str, list[UploadedFile]] = {}
    for file in files:
        by_name.setdefault(file.name.removesuffix("[]"), []).append(_uploaded(file, body))
    for name, found in by_name.items():
        values[name] = found[0] if len(found) == 1 else found
    return values


def check(
    schema: Schema[Any], values: Mapping[str, object], strict: bool, mode: ValidationMode
) -> None:
    """Nothing for a body that meets `schema`; OpenAI's 400 for its first problem."""
    try:
        schema.check(values, strict, mode)
    except ValidationError as exc:
        raise refusal(exc) from None


def validate_check(mode: ValidationMode) -> Check:
    """Refuse a documented request that breaks its reference, unless validation is `off`."""

    def validate(request: web.Request) -> None:
        facts = request[FACTS]
        schema = SCHEMAS.get(facts.call.operation)
        if schema is not None and mode != "off":
            body = facts.body
            if isinstance(body, bytes):
                check(schema, facts.fields, True, mode)
            else:
                check(schema, form_values(facts.fields, facts.files, body), False, mode)

    return validate
