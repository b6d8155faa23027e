"""The upstream room: owns the client session, swaps in the central key, relays both ways.

Bodies travel in both directions without being held whole in memory: request bodies are
streamed as `StreamedBody` chunks, or from the spool of a form held for validation
(`SpooledBody`, with its known length); parsed JSON bodies are small and sent as read. Answers
are relayed chunk by chunk unless upstream declared a small length, read and sent in one piece.
Failures before the answer starts become OpenAI-shaped 502/504; after it started, the client's
connection is cut so a truncated answer can never pass for a complete one.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Iterable

import aiohttp
import orjson
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from proxy.body import Body, SpooledBody, StreamedBody
from proxy.context import Facts
from proxy.errors import UpstreamUnavailable
from proxy.headers import to_client, to_upstream
from proxy.quota_headers import add_rate_limit_headers
from proxy.route import origin_target
from proxy.settings import UpstreamSettings
from proxy.tenancy import Credential

READ_WHOLE_LIMIT = 1024 * 1024


# aiohttp's automatic request headers, none of which Tollgate adds (see `UntouchedRequest`).
_AUTO_HEADERS: CIMultiDict[None] = CIMultiDict(
    (name, None) for name in ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")
)


class UntouchedRequest(aiohttp.ClientRequest):
    """aiohttp's client request without its automatic headers (Accept, Accept-Encoding,
    which would ask upstream for a gzip the client never asked for, User-Agent, and a
    Content-Type guessed from the body): the client's headers go upstream as they came.

    aiohttp's own way, the session's `skip_auto_headers`, sorts the skipped names into a new
    multidict and copies the request's headers, on every request; this hook (the one that
    adds them) keeps one skip list instead, which aiohttp reads again when it adds the
    body's own headers. `test_the_proxy_adds_no_header_of_its_own` holds it to that."""

    def update_auto_headers(self, skip_auto_headers: Iterable[str] | None) -> None:
        """Add nothing; skip everything aiohttp would add."""
        self._skip_auto_headers = _AUTO_HEADERS


def client_session(settings: UpstreamSettings) -> aiohttp.ClientSession:
    """A pooled keep-alive session that relays bytes untouched and keeps no cookies."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=settings.pool_size, ttl_dns_cache=300),
        timeout=aiohttp.ClientTimeout(
            total=None, connect=settings.connect_timeout, sock_read=settings.read_timeout
        ),
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        request_class=UntouchedRequest,
    )


def _sendable(body: bytes) -> bytes | io.BytesIO | None:
    """Small bodies as bytes; past 1 MB a file-like aiohttp sends in chunks (raw bytes that
    large would hold the event loop, and aiohttp warns of it); nothing for an empty body."""
    if not body:
        return None
    return io.BytesIO(body) if len(body) > READ_WHOLE_LIMIT else body


def _streamed_length(request: web.Request, body: Body) -> int | None:
    """The Content-Length of a streamed body: the client's, plus what Tollgate inserted."""
    if isinstance(body, SpooledBody):
        return body.length
    if not isinstance(body, StreamedBody) or request.content_length is None:
        return None
    return request.content_length + body.added


def _wants_stream(up: aiohttp.ClientResponse) -> bool:
    length = up.content_length
    if length is None or length > READ_WHOLE_LIMIT:
        return True
    return up.headers.get("Content-Type", "").startswith("text/event-stream")


class Upstream:
    """Sends one request upstream and relays the answer to the client."""

    def __init__(self, settings: UpstreamSettings) -> None:
        self._settings = settings
        self._origin = settings.origin
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        """Open the pooled session; requests can flow from here on."""
        self._session = client_session(self._settings)

    async def close(self) -> None:
        """Close the session and its pooled connections."""
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        """The open session (a request before `open()` is a programming error)."""
        if self._session is None:
            raise RuntimeError("the upstream session is not open")
        return self._session

    async def reachable(self) -> bool:
        """Whether the upstream answers HTTP at all (any status), within two seconds."""
        try:
            timeout = aiohttp.ClientTimeout(total=2)
            async with self.session.head(self._origin + "/", timeout=timeout):
                return True
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def post_json(
        self, credential: Credential, path: str, payload: object, time_limit: float
    ) -> tuple[int, bytes]:
        """A request of Tollgate's own (a moderation check, say): status and body.

        Network failures and timeouts are raised as they are, for the caller to judge.
        """
        headers = {**credential.headers, "Content-Type": "application/json"}
        async with self.session.post(
            credential.origin + path,
            data=_sendable(orjson.dumps(payload)),
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=time_limit),
            allow_redirects=False,
        ) as up:
            return up.status, await up.read()

    async def forward(
        self, request: web.Request, body: Body, facts: Facts, credential: Credential
    ) -> web.StreamResponse:
        """Relay `request` with `body` upstream on `credential`; answer with what comes back."""
        url = URL(credential.origin + origin_target(request), encoded=True)
        headers = to_upstream(request.headers, credential.headers, _streamed_length(request, body))
        data = _sendable(body) if isinstance(body, bytes) else body.chunks()
        sent = time.perf_counter()
        try:
            async with self.session.request(
                request.method, url, headers=headers, data=data, allow_redirects=False
            ) as up:
                _answered(facts, up, time.perf_counter() - sent)
                headers = _answer_headers(up, facts)
                if _wants_stream(up):
                    return await _relay_stream(request, up, headers, facts)
                return web.Response(status=up.status, body=await up.read(), headers=headers)
        except TimeoutError:
            facts.upstream_error = "timeout"
            raise UpstreamUnavailable(504, "The upstream API did not answer in time.") from None
        except aiohttp.ClientError as exc:
            if isinstance(body, StreamedBody) and body.refused is not None:
                raise body.refused from None
            facts.upstream_error = _failure_kind(exc)
            raise UpstreamUnavailable(502, "The upstream API could not be reached.") from None


def _answered(facts: Facts, up: aiohttp.ClientResponse, seconds: float) -> None:
    """Upstream's answer has begun: its status, its headers and how long it took to come."""
    status = facts.upstream_status = up.status
    facts.upstream_headers = up.headers
    facts.upstream_seconds = seconds
    if status >= 500:
        facts.upstream_error = "5xx"


def _answer_headers(up: aiohttp.ClientResponse, facts: Facts) -> CIMultiDict[str]:
    """The headers the client gets: upstream's end-to-end ones, the rate-limit headers of
    the quota room, and the request id."""
    headers = to_client(up.headers)
    add_rate_limit_headers(headers, facts)
    _settle_request_id(headers, facts)
    return headers


def _failure_kind(exc: aiohttp.ClientError) -> str:
    """`connect` when no connection was made; `reset` when one broke off."""
    return "connect" if isinstance(exc, aiohttp.ClientConnectorError) else "reset"


def _settle_request_id(headers: CIMultiDict[str], facts: Facts) -> None:
    """Upstream's `x-request-id` names the request; where it gave none, Tollgate's does."""
    upstream_id = headers.get("x-request-id")
    if upstream_id:
        facts.known_id = upstream_id
    else:
        headers["x-request-id"] = facts.request_id


async def _relay_stream(
    request: web.Request, up: aiohttp.ClientResponse, headers: CIMultiDict[str], facts: Facts
) -> web.StreamResponse:
    """Copy the answer chunk by chunk; cut the client off if upstream breaks half way."""
    response = web.StreamResponse(status=up.status, headers=headers)
    if up.content_length is not None:
        response.content_length = up.content_length
    await response.prepare(request)
    while True:
        try:
            chunk = await up.content.readany()
        except (aiohttp.ClientError, TimeoutError, asyncio.IncompleteReadError):
            facts.aborted = "upstream_broke"
            facts.upstream_error = "reset"
            _cut(request)
            return response
        try:
            if not chunk:
                await response.write_eof()
                return response
            await response.write(chunk)
        except ConnectionError:
            facts.aborted = "client_gone"
            up.close()
            return response


def _cut(request: web.Request) -> None:
    """Abort the client's connection so the truncated answer is seen as broken."""
    if request.transport is not None:
        request.transport.abort()
