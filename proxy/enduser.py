"""The end-user room: image requests carry a pseudonymous `user`, so OpenAI can tell users apart.

OpenAI's abuse monitoring uses the `user` field of the image operations. Tollgate fills it
with a stable keyed hash of the key's team and user (never the name) unless the client sent
one. JSON bodies get the field spliced in after the opening brace, so the client's own bytes
go on unchanged (and nothing is serialised again); multipart forms get a `user` part in front
of their first part, but only when every text field was read ahead (or the whole form was
held, as it is when validation is on), so a client's own `user` further down can never be
doubled.
"""

from __future__ import annotations

import orjson
from aiohttp import web
from aiohttp.helpers import parse_mimetype

from proxy.body import SpooledBody, StreamedBody
from proxy.context import FACTS, Check
from proxy.tenancy import Tenancy


def _form_part(name: str, value: str, boundary: bytes) -> bytes:
    head = f'Content-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
    return b"--" + boundary + b"\r\n" + head.encode()


def _tag_form(request: web.Request, body: StreamedBody | SpooledBody, pseudonym: str) -> None:
    boundary = parse_mimetype(request.headers.get("Content-Type", "")).parameters["boundary"]
    marker = b"--" + boundary.encode("latin-1")
    body.insert_before(marker, _form_part("user", pseudonym, marker[2:]))


def _tag_json(body: bytes, fields: dict[str, object], pseudonym: str) -> bytes:
    """`body`, a JSON object (parsed into `fields`), with `"user"` as its first member."""
    member = b'"user":' + orjson.dumps(pseudonym)
    if not fields:  # `{}` or none at all: nothing to separate the member from
        return b"{" + member + b"}"
    brace = body.index(b"{") + 1  # only JSON whitespace can come before an object's brace
    return body[:brace] + member + b"," + body[brace:]


def enduser_check(tenancy: Tenancy) -> Check:
    """Give an image request its key's pseudonym as its `user`, unless it has one already.
    (The pipeline runs this check on the three image operations only.)"""

    def enduser(request: web.Request) -> None:
        facts = request[FACTS]
        fields, body = facts.fields, facts.body
        if "user" in fields:
            return
        principal = facts.principal
        pseudonym = tenancy.pseudonym(principal.team, principal.user)
        if isinstance(body, bytes):
            facts.body = _tag_json(body, fields, pseudonym)
        elif facts.call.fields_complete:
            _tag_form(request, body, pseudonym)

    return enduser
