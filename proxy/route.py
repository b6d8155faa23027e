"""The route room: match a `/v1` request to its operation and parse it once into a `Call`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

import orjson
from aiohttp import hdrs, web
from aiohttp.helpers import parse_mimetype
from aiohttp.typedefs import Handler, Middleware
from aiohttp.web_urldispatcher import _default_expect_handler

from proxy.body import BROKEN_BODY, MALFORMED_BODY, Body, SpooledBody, StreamedBody, spool
from proxy.call import PASSTHROUGH_CALL, Call, build_call
from proxy.context import FACTS
from proxy.endpoints import BodyKind, EndpointTable, Match
from proxy.errors import InvalidRequest, NotFound, PayloadTooLarge, ProxyError
from proxy.multipart import (
    Delimiters,
    FieldError,
    FormFile,
    boundary_of,
    read_form_head,
    split_form,
)

FORM_HEAD_LIMIT = 64 * 1024

_BAD_JSON = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
    "sent was not valid JSON.)"
)


_DECODINGS = 3  # percent-decodings a path is checked through (`%252F` takes two)


def _climbs(path: str) -> bool:
    """Whether `path` has a dot segment, a backslash, an encoded slash or a control character."""
    lowered = path.lower()
    return (
        "\\" in path
        or "%2f" in lowered
        or "%5c" in lowered
        or any(segment in (".", "..") for segment in path.split("/"))
        or any(ord(char) < 0x20 or ord(char) == 0x7F for char in path)
    )


def _refuse_escapes(request: web.Request) -> None:
    """A path that could leave `/v1` at some hop reaches nothing: dot segments, backslashes,
    slashes hidden in percent-encoding (`%2F`, or double-encoded `%252F` for a hop that
    decodes twice), control characters (`%0D%0A`); checked through each decoding."""
    path = request.rel_url.raw_path
    if "." not in path and "%" not in path and "\\" not in path:
        return
    for _ in range(_DECODINGS):
        if _climbs(path):
            raise NotFound(request.method, request.path)
        decoded = unquote(path)
        if decoded == path:
            return
        path = decoded
    raise NotFound(request.method, request.path)  # still encoded after that many: no API path


def origin_target(request: web.Request) -> str:
    """The path and query to send upstream, as the client encoded them. An absolute-form
    request line (`GET http://host/v1/...`) contributes its path and query only: its host is
    never where a request goes."""
    return request.rel_url.raw_path_qs


# Methods no API has: TRACE would have upstream echo the request, credential included.
_NOT_FORWARDED_METHODS = frozenset({"TRACE", "TRACK", "CONNECT"})


def _refuse_method(request: web.Request) -> None:
    """A method that is not for an API is a 405, even on a pass-through path."""
    if request.method in _NOT_FORWARDED_METHODS:
        raise ProxyError(405, f"Method {request.method} is not allowed.")


def _refuse_undecodable_headers(request: web.Request) -> None:
    """A header value that is not UTF-8 is a 400, not forwarded mangled."""
    headers = request.headers
    if "".join(headers.values()).isascii():  # the usual case, in two C calls
        return
    for name, value in headers.items():
        if value.isascii():
            continue
        try:
            value.encode()
        except UnicodeEncodeError:
            raise InvalidRequest(f"The {name} header is not valid UTF-8.") from None


def _json_object(request: web.Request, raw: bytes) -> dict[str, Any]:
    """The JSON object of the raw body; an empty body is an empty object."""
    if not raw:
        return {}
    # The header as the SDKs send it, checked before aiohttp parses it into `content_type`.
    if request.headers.get(hdrs.CONTENT_TYPE) != "application/json" and (
        request.content_type != "application/json"
    ):
        raise InvalidRequest(
            f"Invalid Content-Type header ({request.content_type}), expected application/json."
        )
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest(_BAD_JSON) from None
    if not isinstance(value, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return value


Parsed = tuple[Call, Body, dict[str, Any], tuple[FormFile, ...]]


def _form_boundary(request: web.Request) -> bytes:
    """The boundary of a multipart/form-data body, or a 400."""
    boundary = (
        boundary_of(dict(parse_mimetype(request.headers.get("Content-Type", "")).parameters))
        if request.body_exists
        else None
    )
    if request.content_type != "multipart/form-data" or boundary is None:
        raise InvalidRequest(
            f"Invalid Content-Type header ({request.content_type}), expected multipart/form-data."
        )
    return boundary


async def _parse_form(request: web.Request, match: Match, limit: int) -> Parsed:
    """Read the text fields ahead of the first file; the files stream on."""
    boundary = _form_boundary(request)
    head = await read_form_head(request.content, boundary, FORM_HEAD_LIMIT)
    call = build_call(match.endpoint, match.params, head.fields, fields_complete=head.complete)
    return call, StreamedBody(head.prefix, request.content, limit), dict(head.fields), ()


async def _hold_form(request: web.Request, match: Match, limit: int) -> Parsed:
    """Spool the whole form (bounded by `limit`) and split it into fields and files."""
    delimiters = Delimiters(_form_boundary(request))
    body = await spool(StreamedBody(b"", request.content, limit), delimiters)
    try:
        form = split_form(body.read, delimiters)
    except FieldError:
        body.close()
        raise
    call = build_call(match.endpoint, match.params, form.fields)
    return call, body, dict(form.fields), form.files


async def _parse_part(request: web.Request, match: Match, limit: int) -> Parsed:
    """Read an upload part's head up to its first file, which streams on unread."""
    head = await read_form_head(request.content, _form_boundary(request), FORM_HEAD_LIMIT)
    call = build_call(match.endpoint, match.params, head.fields, fields_complete=head.complete)
    files = (FormFile(head.first_file, None, None),) if head.first_file is not None else ()
    return call, StreamedBody(head.prefix, request.content, limit), dict(head.fields), files


async def parse(request: web.Request, match: Match | None, limit: int, *, hold: bool) -> Parsed:
    """The `Call` and the body to forward, reading no more of the body than parsing needs.

    With `hold` (validation on), a form is read whole and an upload part's head is read, so
    both can be checked before anything is sent.
    """
    if match is None:
        return PASSTHROUGH_CALL, _untouched(request, limit), {}, ()
    kind = match.endpoint.body
    if kind is BodyKind.JSON:  # read and parsed here, not in coroutines of their own
        raw = await request.read()
        values = _json_object(request, raw)
        return build_call(match.endpoint, match.params, values), raw, values, ()
    if kind is BodyKind.FORM:
        reader = _hold_form if hold else _parse_form
        return await reader(request, match, limit)
    if kind is BodyKind.PART and hold:
        return await _parse_part(request, match, limit)
    return build_call(match.endpoint, match.params, {}), _untouched(request, limit), {}, ()


def _untouched(request: web.Request, limit: int) -> Body:
    """A body relayed as it comes, or none at all when the request has none."""
    return StreamedBody(b"", request.content, limit) if request.body_exists else b""


def expect_handler(limit: int) -> Callable[[web.Request], Awaitable[None]]:
    """`Expect: 100-continue` with a declared length over `limit` is a 413 at once, so the
    client sends no body; otherwise aiohttp's own handling (100 Continue, or 417)."""

    async def expect(request: web.Request) -> None:
        if (request.content_length or 0) > limit:
            raise PayloadTooLarge(limit)
        await _default_expect_handler(request)

    return expect


def route_middleware(
    table: EndpointTable, *, passthrough: bool, limit: int, hold_forms: bool = False
) -> Middleware:
    """Set the facts' `call`, `body`, `fields` and `files` for every `/v1` request, or refuse it.

    Refusals are 400 (a header value not UTF-8, a body the HTTP parser gave up on half-way),
    404, 405 (TRACE and the like) and 413. With `hold_forms`, documented forms are read
    before the next room runs (see `parse`); a held form's spool is dropped when the request
    ends.
    """

    async def route(request: web.Request, handler: Handler) -> web.StreamResponse:
        _refuse_method(request)
        _refuse_escapes(request)
        _refuse_undecodable_headers(request)
        if (request.content_length or 0) > limit:
            raise PayloadTooLarge(limit)
        match = table.match(request.method, request.path)
        if match is None and not passthrough:
            raise NotFound(request.method, request.path)
        try:
            call, body, fields, files = await parse(request, match, limit, hold=hold_forms)
        except FieldError as bad:
            raise InvalidRequest(bad.message, param=bad.name) from None
        except MALFORMED_BODY:
            raise InvalidRequest(BROKEN_BODY) from None
        facts = request[FACTS]
        facts.operation, facts.model = call.operation, call.model
        facts.call, facts.body, facts.fields, facts.files = call, body, fields, files
        try:
            return await handler(request)
        finally:
            if isinstance(body, SpooledBody):
                body.close()

    return route
