"""Which headers cross the proxy, in each direction."""

from __future__ import annotations

from multidict import CIMultiDict, CIMultiDictProxy, istr

# RFC 9110 section 7.6.1 hop-by-hop fields, plus the ones the proxy rewrites itself.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Names as `istr`, which keeps its case-folded form: a lookup with a plain `str` folds it again
# each time (every request looks up each of these names).
_CONNECTION = istr("connection")
# Client credentials never reach upstream; the central ones replace them.
_NOT_FORWARDED = tuple(
    istr(name)
    for name in HOP_BY_HOP
    | {
        "host",
        "authorization",
        "openai-organization",
        "openai-project",
        "expect",
        "cookie",
        "content-length",
    }
)
# Content-Length is set again by aiohttp; cookies of OpenAI's edge are not the clients' business.
_NOT_RETURNED = tuple(istr(name) for name in HOP_BY_HOP | {"content-length", "set-cookie"})


def _connection_tokens(connection: list[str]) -> set[str]:
    """Extra hop-by-hop names listed in the `Connection` header's values."""
    return {token.strip().lower() for value in connection for token in value.split(",")}


def _filtered(headers: CIMultiDictProxy[str], dropped: tuple[istr, ...]) -> CIMultiDict[str]:
    """A copy without `dropped` (a C-level copy then a few deletions: 8x a filtered rebuild)."""
    out = CIMultiDict(headers)
    for name in dropped:
        if name in out:
            del out[name]
    connection = headers.getall(_CONNECTION, None)
    # Beyond the hop-by-hop fields, always dropped, `Connection` may name others; not the usual
    # lone `keep-alive`, whose token set is then not worth working out.
    if connection is not None and (
        len(connection) > 1 or connection[0].strip().lower() not in HOP_BY_HOP
    ):
        for token in _connection_tokens(connection):
            out.popall(token, None)
    return out


def to_upstream(
    headers: CIMultiDictProxy[str], credentials: dict[str, str], length: int | None
) -> CIMultiDict[str]:
    """The client's end-to-end headers with the credential put in, and the streamed length."""
    out = _filtered(headers, _NOT_FORWARDED)
    if length is not None:
        out["Content-Length"] = str(length)
    out.update(credentials)
    return out


def to_client(headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """Upstream's end-to-end headers, `x-request-id` and `openai-*` among them."""
    return _filtered(headers, _NOT_RETURNED)
