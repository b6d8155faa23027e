"""The end-user room: image requests carry a pseudonymous `user`, so OpenAI can tell users apart.

OpenAI's abuse monitoring uses the `user` field of the image operations. Tollgate fills it
with a stable keyed hash of the key's team and user (never the name) unless the client sent
one. JSON bodies get the field added; multipart forms get a `user` part in front of their
first part, but only when every text field was read ahead (or the whole form was held, as it
is when validation is on), so a client's own `user` further down can never be doubled.
"""

from __future__ import annotations

import orjson
from aiohttp import web
from aiohttp.helpers import parse_mimetype
from aiohttp.typedefs import Handler, Middleware

from proxy.auth import PRINCIPAL
from proxy.body import SpooledBody, StreamedBody
from proxy.call import IMAGE_OPERATIONS
from proxy.route import BODY, CALL, FIELDS
from proxy.tenancy import Tenancy


def _form_part(name: str, value: str, boundary: bytes) -> bytes:
    head = f'Content-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
    return b"--" + boundary + b"\r\n" + head.encode()


def _tag_form(request: web.Request, body: StreamedBody | SpooledBody, pseudonym: str) -> None:
    boundary = parse_mimetype(request.headers.get("Content-Type", "")).parameters["boundary"]
    marker = b"--" + boundary.encode("latin-1")
    body.insert_before(marker, _form_part("user", pseudonym, marker[2:]))


def tag_user(request: web.Request, pseudonym: str) -> None:
    """Give the image request `pseudonym` as its `user`, unless it has one already."""
    fields, body = request[FIELDS], request[BODY]
    if "user" in fields:
        return
    if isinstance(body, bytes):
        request[BODY] = orjson.dumps({**fields, "user": pseudonym})
    elif request[CALL].fields_complete:
        _tag_form(request, body, pseudonym)


def enduser_middleware(tenancy: Tenancy) -> Middleware:
    """Set OpenAI's `user` field on the three image operations."""

    async def enduser(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request[CALL].operation in IMAGE_OPERATIONS:
            principal = request[PRINCIPAL]
            tag_user(request, tenancy.pseudonym(principal.team, principal.user))
        return await handler(request)

    return enduser
