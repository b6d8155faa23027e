"""Bad input on the wire: what HTTP clients won't send, sent over raw sockets.

Each case is written byte for byte to a real Tollgate (`TollgateRunner`, as `tollgate serve`
runs it) on loopback, in front of the fake upstream. Every refusal must be OpenAI's error
shape with the right status (never aiohttp's plain text, a 500 or a hang); nothing may reach
a host other than the configured upstream (an "evil" listener records any connection) or a
path outside `/v1` there.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from proxy.settings import AdminSettings, HeaderLimits
from tests.conftest import (
    CLIENT_KEY,
    MakeProxy,
    Proxy,
    RedisServer,
    Upstream,
    free_port,
    sent_on,
)
from tests.samples import png

EXCHANGE_TIMEOUT = 10.0  # a generous bound: a hang fails the test instead of stalling it
AUTH = f"Authorization: Bearer {CLIENT_KEY}\r\n".encode()
HEAD = b"Host: tollgate.test\r\n" + AUTH


@dataclass
class Answer:
    """One HTTP response as read off the socket, and whether the server closed after it."""

    status: int
    headers: dict[str, str]
    body: bytes
    closed: bool

    def error(self) -> dict[str, Any]:
        """The OpenAI error object of this answer, after checking its shape."""
        assert self.headers["content-type"].startswith("application/json"), self
        payload = json.loads(self.body)
        assert set(payload) == {"error"}, payload
        assert set(payload["error"]) == {"message", "type", "param", "code"}, payload
        assert isinstance(payload["error"]["message"], str)
        assert self.headers["x-request-id"].startswith("req_")
        error: dict[str, Any] = payload["error"]
        return error


async def _read_answer(reader: asyncio.StreamReader, *, wait_close: bool = True) -> Answer:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in lines if line)
    }
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    closed = await reader.read(1) == b"" if wait_close else False
    return Answer(int(status_line.split()[1]), headers, body, closed)


def _port(proxy: Proxy | int) -> int:
    if isinstance(proxy, int):
        return proxy
    assert proxy.server.port is not None
    return proxy.server.port


async def exchange(
    proxy: Proxy | int, pieces: Sequence[bytes], *, pause: float = 0.0, wait_close: bool = True
) -> Answer:
    """Write `pieces` (with `pause` between them) and read the answer, then (`wait_close`)
    whether the server closes the connection.

    For keep-alive answers that wait would last: callers that expect the server to keep the
    connection send `Connection: close`.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(proxy))
    try:
        for index, piece in enumerate(pieces):
            if index and pause:
                await asyncio.sleep(pause)
            writer.write(piece)
            await writer.drain()
        answer = _read_answer(reader, wait_close=wait_close)
        return await asyncio.wait_for(answer, EXCHANGE_TIMEOUT)
    finally:
        writer.close()


async def closes_without_answer(proxy: Proxy, pieces: Sequence[bytes]) -> bytes:
    """Write `pieces`, half-close, and return what came back before the server closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(proxy))
    try:
        for piece in pieces:
            writer.write(piece)
        writer.write_eof()
        return await asyncio.wait_for(reader.read(), EXCHANGE_TIMEOUT)
    finally:
        writer.close()


@dataclass
class Listener:
    """A raw TCP listener that records every connection's bytes and answers a small 200."""

    port: int = 0
    received: list[bytes] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), EXCHANGE_TIMEOUT)
        except (asyncio.IncompleteReadError, TimeoutError) as cut:
            head = cut.partial if isinstance(cut, asyncio.IncompleteReadError) else b""
        self.received.append(head)
        body = b'{"object": "list", "data": []}'
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
            + b"Content-Length: %d\r\n\r\n" % len(body)
            + body
        )
        await writer.drain()
        writer.close()


async def _listen() -> AsyncIterator[Listener]:
    listener = Listener()
    server = await asyncio.start_server(listener.handle, "127.0.0.1", 0)
    listener.port = server.sockets[0].getsockname()[1]
    yield listener
    server.close()
    await server.wait_closed()


@pytest.fixture
async def evil() -> AsyncIterator[Listener]:
    """A host no request may ever reach: it records whatever connects."""
    async for listener in _listen():
        yield listener


@pytest.fixture
async def raw_upstream() -> AsyncIterator[Listener]:
    """An upstream that records the exact bytes of each request head it gets."""
    async for listener in _listen():
        yield listener


def request(method: str, target: str, *headers: bytes, body: bytes = b"") -> bytes:
    """A raw request with Host and the client's key; `headers` are whole header lines."""
    line = f"{method} {target} HTTP/1.1\r\n".encode()
    return line + HEAD + b"".join(headers) + b"\r\n" + body


def _stayed_home(upstream: Upstream, evil: Listener) -> None:
    """Nothing reached the evil host; whatever reached upstream was a /v1 path on it."""
    assert evil.received == []
    host = upstream.url.removeprefix("http://")
    for seen in upstream.state.received:
        assert seen.path.startswith("/v1/"), seen.path
        assert seen.headers["Host"] == host


# --- What aiohttp's HTTP parser refuses: OpenAI's 400 or 431, then the connection closes ---

JSON_POST = b"POST /v1/moderations HTTP/1.1\r\n" + HEAD + b"Content-Type: application/json\r\n"
CHUNKED = b"Transfer-Encoding: chunked\r\n"
MALFORMED: dict[str, bytes] = {
    "content-length then transfer-encoding": JSON_POST
    + b"Content-Length: 5\r\n"
    + CHUNKED
    + b"\r\n0\r\n\r\n",
    "transfer-encoding then content-length": JSON_POST
    + CHUNKED
    + b"Content-Length: 5\r\n\r\n0\r\n\r\n",
    "two different content-lengths": JSON_POST
    + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}x",
    "the same content-length twice": JSON_POST
    + b"Content-Length: 2\r\nContent-Length: 2\r\n\r\n{}",
    "content-length list": JSON_POST + b"Content-Length: 2, 2\r\n\r\n{}",
    "signed content-length": JSON_POST + b"Content-Length: +2\r\n\r\n{}",
    "overflowing content-length": JSON_POST + b"Content-Length: " + b"9" * 30 + b"\r\n\r\n{}",
    "chunked, identity": JSON_POST + b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    "chunked, chunked": JSON_POST + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
    "identity": JSON_POST + b"Transfer-Encoding: identity\r\n\r\n{}",
    "gzip transfer-encoding": JSON_POST + b"Transfer-Encoding: gzip\r\n\r\n{}",
    "obs-fold transfer-encoding": JSON_POST + b"Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
    "obs-fold header": b"GET /v1/models HTTP/1.1\r\n" + HEAD + b"X-Note: a\r\n b\r\n\r\n",
    "chunk size not hex": JSON_POST + CHUNKED + b"\r\nzz\r\n{}\r\n0\r\n\r\n",
    "negative chunk size": JSON_POST + CHUNKED + b"\r\n-2\r\n{}\r\n0\r\n\r\n",
    "chunk longer than its size": JSON_POST + CHUNKED + b"\r\n1\r\n{}\r\n0\r\n\r\n",
    "NUL in a chunk extension": JSON_POST + CHUNKED + b"\r\n2;\x00\r\n{}\r\n0\r\n\r\n",
    "invalid method": b"G(T /v1/models HTTP/1.1\r\n" + HEAD + b"\r\n",
    "invalid version": b"GET /v1/models HTTP/9.9\r\n" + HEAD + b"\r\n",
    "not HTTP": b"GET /v1/models SPDY/1.1\r\n" + HEAD + b"\r\n",
    "TLS on the HTTP port": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,
    "invalid UTF-8 in the path": b"GET /v1/models/\xff\xfe HTTP/1.1\r\n" + HEAD + b"\r\n",
    "invalid UTF-8 in the query": b"GET /v1/models?after=\xff HTTP/1.1\r\n" + HEAD + b"\r\n",
    "control character in the target": b"GET /v1/mod\x01els HTTP/1.1\r\n" + HEAD + b"\r\n",
    "asterisk target": b"GET * HTTP/1.1\r\n" + HEAD + b"\r\n",
    "NUL in a header value": b"GET /v1/models HTTP/1.1\r\n" + HEAD + b"X-Note: a\x00b\r\n\r\n",
    "bare LF injecting a header": b"GET /v1/models HTTP/1.1\r\n"
    + HEAD
    + b"X-Note: a\nX-Injected: yes\r\n\r\n",
    "bare CR injecting a header": b"GET /v1/models HTTP/1.1\r\n"
    + HEAD
    + b"X-Note: a\rX-Injected: yes\r\n\r\n",
    "space before the colon": b"GET /v1/models HTTP/1.1\r\n" + HEAD + b"X-Note : a\r\n\r\n",
    "no Host": b"GET /v1/models HTTP/1.1\r\n" + AUTH + b"\r\n",
    "two Hosts": b"GET /v1/models HTTP/1.1\r\n" + HEAD + b"Host: evil.example\r\n\r\n",
}


@pytest.mark.parametrize("raw", MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_http_is_an_openai_400_and_a_closed_connection(
    proxy: Proxy, upstream: Upstream, evil: Listener, raw: bytes
) -> None:
    """aiohttp's parser refuses these before any room runs; the answer is still OpenAI's,
    echoes none of the request's bytes, and the connection is closed after it."""
    answer = await exchange(proxy, [raw])
    assert answer.status == 400, answer
    error = answer.error()
    assert error["type"] == "invalid_request_error"
    assert b"\\x" not in answer.body
    assert CLIENT_KEY.encode() not in answer.body
    assert answer.closed
    assert upstream.state.received == []
    _stayed_home(upstream, evil)


async def test_a_malformed_request_on_a_kept_alive_connection_gets_its_own_answer(
    proxy: Proxy, upstream: Upstream
) -> None:
    """A good request is answered and the connection kept; a malformed one after it on the
    same connection gets OpenAI's 400, then the connection closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(proxy))
    try:
        writer.write(request("GET", "/v1/files"))
        first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), EXCHANGE_TIMEOUT)
        length = int(first.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await asyncio.wait_for(reader.readexactly(length), EXCHANGE_TIMEOUT)
        writer.write(MALFORMED["transfer-encoding then content-length"])
        second = await asyncio.wait_for(_read_answer(reader), EXCHANGE_TIMEOUT)
    finally:
        writer.close()
    assert first.startswith(b"HTTP/1.1 200 ")
    assert second.status == 400
    assert second.error()["type"] == "invalid_request_error"
    assert second.closed
    assert [seen.path for seen in upstream.state.received] == ["/v1/files"]


async def test_a_refused_request_leaves_no_key_in_the_server_log(
    proxy: Proxy, caplog: pytest.LogCaptureFixture
) -> None:
    """aiohttp logged the refused request line or header at error level, bytes and all; a
    key with a NUL in it must appear neither in the answer nor in any log record."""
    caplog.set_level(logging.DEBUG)
    raw = b"GET /v1/models HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " + CLIENT_KEY.encode()
    answer = await exchange(proxy, [raw + b"\x00\r\n\r\n"])
    assert answer.status == 400
    assert CLIENT_KEY.encode() not in answer.body
    assert CLIENT_KEY not in caplog.text
    assert CLIENT_KEY not in proxy.log_text()
    assert "InvalidHeader" in caplog.text or "BadHttpMessage" in caplog.text


def _headers(count: int) -> bytes:
    return b"".join(b"X-Filler-%d: v\r\n" % i for i in range(count))


TOO_LARGE: dict[str, bytes] = {
    "too many headers": request("GET", "/v1/models", _headers(200)),
    "a long header value": request("GET", "/v1/models", b"X-Big: " + b"a" * 10_000 + b"\r\n"),
    "a long header name": request("GET", "/v1/models", b"X" * 10_000 + b": v\r\n"),
    "a long key": request(
        "GET", "/v1/models", b"Authorization: Bearer tg-" + b"k" * 9000 + b"\r\n"
    ),
    "a long path": request("GET", "/v1/models/" + "m" * 10_000),
    "a long query": request("GET", "/v1/models?after=" + "q" * 10_000),
}


@pytest.mark.parametrize("raw", TOO_LARGE.values(), ids=TOO_LARGE.keys())
async def test_oversized_heads_are_an_openai_431(
    proxy: Proxy, upstream: Upstream, raw: bytes
) -> None:
    """Past the header limits: 431 in OpenAI's shape, naming the limits, echoing nothing."""
    answer = await exchange(proxy, [raw])
    assert answer.status == 431, answer
    error = answer.error()
    assert error["code"] == "request_headers_too_large"
    assert "8190" in error["message"]
    assert "128" in error["message"]
    assert b"kkkk" not in answer.body
    assert answer.closed
    assert upstream.state.received == []


async def test_the_header_limits_are_settings(
    make_proxy: MakeProxy, raw_upstream: Listener
) -> None:
    """`TOLLGATE_HEADERS__*` move the limits both ways. (The raw upstream takes any head.)"""
    origin = f"http://127.0.0.1:{raw_upstream.port}"
    tight = await make_proxy(origin, headers=HeaderLimits(max_count=16, max_line_bytes=2048))
    many = await exchange(tight, [request("GET", "/v1/files", _headers(20))])
    long = b"X-Big: " + b"a" * 3000 + b"\r\n"
    longer = await exchange(tight, [request("GET", "/v1/files", long)])
    assert (many.status, longer.status) == (431, 431)
    assert "2048" in many.error()["message"]
    assert "16" in many.error()["message"]
    roomy = await make_proxy(origin, headers=HeaderLimits(max_count=300, max_line_bytes=20_000))
    close = b"Connection: close\r\n"
    lots = await exchange(roomy, [request("GET", "/v1/files", _headers(200), close)])
    big = b"X-Big: " + b"a" * 15_000 + b"\r\n"
    large = await exchange(roomy, [request("GET", "/v1/files", big, close)])
    assert (lots.status, large.status) == (200, 200)
    assert [head.split(b" ")[1] for head in raw_upstream.received] == [b"/v1/files"] * 2
    assert b"X-Filler-199: v" in raw_upstream.received[0]


# --- Bodies: broken half way, truncated, over the limit, not UTF-8 ---


def _chunked_head(path: str, content_type: bytes) -> bytes:
    return request("POST", path, b"Content-Type: " + content_type + b"\r\n" + CHUNKED)


FORM = b"multipart/form-data; boundary=b"


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


FIELD_HEAD = b'--b\r\nContent-Disposition: form-data; name="n"\r\n\r\n1\r\n'
FILE_HEAD = b'--b\r\nContent-Disposition: form-data; name="data"; filename="p"\r\n\r\nxxx'
BROKEN_HALF_WAY = {
    "json": ("/v1/moderations", b"application/json", _chunk(b'{"input"')),
    "held form": ("/v1/images/variations", FORM, _chunk(FIELD_HEAD)),
    "upload part": ("/v1/uploads/upload_1/parts", FORM, _chunk(FILE_HEAD)),
    "pass-through": ("/v1/files", b"application/octet-stream", _chunk(b"hello")),
}


@pytest.mark.parametrize(
    ("path", "content_type", "first"), BROKEN_HALF_WAY.values(), ids=BROKEN_HALF_WAY.keys()
)
async def test_a_chunk_broken_half_way_is_a_400_not_a_hang(
    proxy: Proxy,
    upstream: Upstream,
    caplog: pytest.LogCaptureFixture,
    path: str,
    content_type: bytes,
    first: bytes,
) -> None:
    """A good chunk, a pause (the request is being handled), then a chunk size that is not
    hex: the request reading that body gets OpenAI's 400 at once, and the connection ends
    quietly (the client's fault is no server error)."""
    head = _chunked_head(path, content_type)
    answer = await exchange(proxy, [head + first, b"zz\r\nmore\r\n"], pause=0.2)
    assert answer.status == 400, answer
    assert "chunked" in answer.error()["message"]
    assert answer.closed
    assert "unhandled_error" not in proxy.log_text()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert all(seen.path.startswith("/v1/") for seen in upstream.state.received)
    assert not any(b"more" in seen.body for seen in upstream.state.received)


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/v1/moderations", b"application/json"),
        ("/v1/images/variations", FORM),
        ("/v1/uploads/upload_1/parts", FORM),
        ("/v1/files", b"application/octet-stream"),
    ],
)
async def test_a_body_shorter_than_declared_then_a_close_ends_the_request(
    proxy: Proxy, upstream: Upstream, path: str, content_type: bytes
) -> None:
    """Content-Length 1000, 20 bytes, then the client half-closes: the server closes too,
    promptly, and upstream never sees a complete request."""
    head = request("POST", path, b"Content-Type: " + content_type + b"\r\nContent-Length: 1000\r\n")
    got = await closes_without_answer(proxy, [head + b"--b\r\n" + b"x" * 15])
    assert got == b"" or got.startswith(b"HTTP/1.1 4")
    assert not any(len(seen.body) == 1000 for seen in upstream.state.received)
    assert all(seen.path.startswith("/v1/") for seen in upstream.state.received)


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/v1/moderations", b"application/json"),
        ("/v1/images/edits", FORM),
        ("/v1/uploads/upload_1/parts", FORM),
        ("/v1/files", b"application/octet-stream"),
    ],
)
async def test_bodies_over_the_limit_are_a_413_declared_or_chunked(
    make_proxy: MakeProxy, upstream: Upstream, path: str, content_type: bytes
) -> None:
    """A declared length over the limit and a chunked body growing past it are both 413."""
    proxy = await make_proxy(max_request_bytes=4096)
    kind = b"Content-Type: " + content_type + b"\r\nConnection: close\r\n"
    declared = request("POST", path, kind, b"Content-Length: 5000\r\n", body=b"x" * 5000)
    answer = await exchange(proxy, [declared])
    assert answer.status == 413
    assert answer.error()["code"] == "request_too_large"
    part = b'--b\r\nContent-Disposition: form-data; name="data"; filename="p"\r\n\r\n'
    start = _chunk(part) if content_type == FORM else b""
    chunk = b"400\r\n" + b"x" * 1024 + b"\r\n"
    head = _chunked_head(path, content_type + b"\r\nConnection: close")
    chunked = head + start + chunk * 6 + b"0\r\n\r\n"
    answer = await exchange(proxy, [chunked])
    assert answer.status == 413
    assert answer.error()["code"] == "request_too_large"
    assert all(len(seen.body) <= 4096 for seen in upstream.state.received)


async def test_expect_continue_over_the_limit_is_a_413_before_any_body(
    make_proxy: MakeProxy, upstream: Upstream
) -> None:
    """A client waiting for `100 Continue` with a declared length over the limit gets the 413
    straight away, and no `100 Continue` that would invite the body."""
    proxy = await make_proxy(max_request_bytes=4096)
    head = b"Expect: 100-continue\r\nContent-Length: 1000000000\r\n"
    # Not waiting for the close: aiohttp lingers a while for a body that may still come.
    answer = await exchange(proxy, [request("POST", "/v1/files", head)], wait_close=False)
    assert answer.status == 413
    assert answer.error()["code"] == "request_too_large"
    assert answer.headers["connection"] == "close"
    assert upstream.state.received == []


@pytest.mark.parametrize("path", ["/v1/moderations", "/healthz", "/admin"])
async def test_an_unknown_expectation_is_an_openai_417(proxy: Proxy, path: str) -> None:
    """aiohttp refuses an `Expect` other than 100-continue before any middleware runs, on
    any path; the answer is still OpenAI's."""
    raw = request("POST", path, b"Expect: a-pony\r\nContent-Length: 2\r\nConnection: close\r\n")
    answer = await exchange(proxy, [raw + b"{}"])
    assert answer.status == 417
    assert answer.error()["message"] == "Expectation Failed"


def _form(*parts: bytes) -> bytes:
    return b"".join(parts) + b"--b--\r\n"


def _field(name: bytes, value: bytes) -> bytes:
    return b'--b\r\nContent-Disposition: form-data; name="' + name + b'"\r\n\r\n' + value + b"\r\n"


IMAGE = b'--b\r\nContent-Disposition: form-data; name="image"; filename="i.png"\r\n' + (
    b"Content-Type: image/png\r\n\r\n" + png(2) + b"\r\n"
)
NOT_UTF8 = {
    "a header value": (
        "/v1/models",
        b"GET",
        b"X-Note: caf\xe9\r\n",
        b"",
    ),
    "a JSON body": (
        "/v1/moderations",
        b"POST",
        b"Content-Type: application/json\r\n",
        b'{"input": "caf\xe9"}',
    ),
    "a form field value": (
        "/v1/images/edits",
        b"POST",
        b"Content-Type: multipart/form-data; boundary=b\r\n",
        _form(_field(b"prompt", b"an otter in a caf\xe9"), IMAGE),
    ),
    "a form field name": (
        "/v1/images/edits",
        b"POST",
        b"Content-Type: multipart/form-data; boundary=b\r\n",
        _form(_field(b"prompt", b"an otter"), _field(b"\xffuser", b"x"), IMAGE),
    ),
}


@pytest.mark.parametrize(
    ("path", "method", "header", "body"), NOT_UTF8.values(), ids=NOT_UTF8.keys()
)
async def test_text_that_is_not_utf8_is_a_400(
    proxy: Proxy, upstream: Upstream, path: str, method: bytes, header: bytes, body: bytes
) -> None:
    """Invalid UTF-8 where text is expected is refused, never forwarded mangled or replaced
    (a prompt moderated as one text and sent as another)."""
    length = b"Content-Length: %d\r\n" % len(body) if body else b""
    raw = request(method.decode(), path, header, length, b"Connection: close\r\n", body=body)
    answer = await exchange(proxy, [raw])
    assert answer.status == 400, answer
    assert answer.error()["type"] == "invalid_request_error"
    assert sent_on(upstream) == []


MULTIPART_BROKEN = {
    "no boundary": (b"multipart/form-data", _form(_field(b"prompt", b"otter"), IMAGE)),
    "boundary never closed": (FORM, _field(b"prompt", b"otter") + IMAGE),
    "a part without headers": (FORM, _form(b"--b\r\n\r\notter\r\n", IMAGE)),
    "a part with a broken disposition": (
        FORM,
        _form(b"--b\r\nContent-Disposition: form-data; nam\r\n\r\notter\r\n", IMAGE),
    ),
    "only the closing delimiter": (FORM, b"--b--\r\n"),
    "empty": (FORM, b""),
}


@pytest.mark.parametrize(
    ("content_type", "body"), MULTIPART_BROKEN.values(), ids=MULTIPART_BROKEN.keys()
)
async def test_malformed_multipart_is_an_openai_400(
    proxy: Proxy, upstream: Upstream, content_type: bytes, body: bytes
) -> None:
    """An image edit whose form is malformed (so no prompt can be read from it) is a 400 and
    goes nowhere."""
    kind = b"Content-Type: " + content_type + b"\r\n"
    length = b"Content-Length: %d\r\n" % len(body)
    raw = request("POST", "/v1/images/edits", kind, length, b"Connection: close\r\n", body=body)
    answer = await exchange(proxy, [raw])
    assert answer.status == 400, answer
    assert answer.error()["type"] == "invalid_request_error"
    assert sent_on(upstream) == []


# --- Targets: never another host, never outside /v1 ---

REFUSED_TARGETS = [
    "/v1/../admin",
    "/v1/models/../../admin",
    "/v1/%2e%2e/admin",
    "/v1/models/%2E%2E/%2e%2e/admin",
    "/v1/./models",
    "/v1/models/a%2Fb",
    "/v1/models/a%2f..%2f..%2fadmin",
    "/v1/models/a%252Fb",
    "/v1/models/%252e%252e/x",
    "/v1/models/a%2525252Fb",
    "/v1/models\\..\\..\\admin",
    "/v1/models%5c..%5cadmin",
    "/v1/models%0d%0aX-Injected:%20yes",
    "/v1/models%00",
    "//evil.example/v1",
    "//evil.example/v1/models",
    "/v1x/models",
    "/v1",
    "/admin",
    "http://evil.example/admin",
    "http://evil.example/v1/../admin",
]


@pytest.mark.parametrize("target", REFUSED_TARGETS)
async def test_targets_that_leave_v1_are_a_404(
    proxy: Proxy, upstream: Upstream, evil: Listener, target: str
) -> None:
    """Dot segments, backslashes, control characters, encoded and double-encoded slashes,
    `//host` and anything outside `/v1`: OpenAI's 404, nothing sent anywhere."""
    answer = await exchange(proxy, [request("GET", target, b"Connection: close\r\n")])
    assert answer.status == 404, answer
    assert answer.error()["message"].startswith("Invalid URL (GET ")
    assert upstream.state.received == []
    _stayed_home(upstream, evil)


async def test_absolute_form_targets_go_to_the_configured_upstream_only(
    proxy: Proxy, upstream: Upstream, evil: Listener
) -> None:
    """`GET http://elsewhere/v1/files`: served as `/v1/files` by the configured upstream;
    the host in the request line is never contacted."""
    targets = [
        "http://evil.example/v1/files",
        f"http://127.0.0.1:{evil.port}/v1/files?limit=1",
        f"http://user@127.0.0.1:{evil.port}/v1/files",
        f"https://127.0.0.1:{evil.port}/v1/files#fragment",
    ]
    for target in targets:
        answer = await exchange(proxy, [request("GET", target, b"Connection: close\r\n")])
        assert answer.status == 200, (target, answer)
    assert [seen.path for seen in sent_on(upstream)] == ["/v1/files"] * 4
    assert [seen.query for seen in sent_on(upstream)] == ["", "limit=1", "", ""]
    _stayed_home(upstream, evil)


@pytest.mark.parametrize(
    "target",
    ["/v1/@evil.example/models", "/v1//evil.example/models", "/v1/x/@evil.example"],
)
async def test_at_signs_and_double_slashes_inside_v1_stay_on_the_upstream(
    proxy: Proxy, upstream: Upstream, evil: Listener, target: str
) -> None:
    """An `@` or `//` after `/v1/` is just part of a path on the configured upstream."""
    answer = await exchange(proxy, [request("GET", target, b"Connection: close\r\n")])
    assert answer.status == 404  # the fake upstream serves no such path
    assert answer.error()["message"] == f"Invalid URL (GET {target})"
    assert [seen.path for seen in sent_on(upstream)] == [target]
    _stayed_home(upstream, evil)


@pytest.mark.parametrize("target", ["/v1/models", "/v1/files"])
async def test_trace_is_a_405_and_never_forwarded(
    proxy: Proxy, upstream: Upstream, target: str
) -> None:
    """TRACE would have upstream echo the request back, the central key with it."""
    answer = await exchange(proxy, [request("TRACE", target, b"Connection: close\r\n")])
    assert answer.status == 405
    assert answer.error()["message"] == "Method TRACE is not allowed."
    assert upstream.state.received == []


async def test_connect_reaches_nothing(proxy: Proxy, upstream: Upstream, evil: Listener) -> None:
    """Tollgate is no forward proxy: CONNECT to another host is a 404 and connects nowhere."""
    raw = (
        f"CONNECT 127.0.0.1:{evil.port} HTTP/1.1\r\n".encode() + HEAD + b"Connection: close\r\n\r\n"
    )
    answer = await exchange(proxy, [raw])
    assert answer.status == 404, answer  # no path at all: nothing to route
    answer.error()
    _stayed_home(upstream, evil)
    assert upstream.state.received == []


async def test_encoded_crlf_in_the_query_stays_encoded_upstream(
    make_proxy: MakeProxy, raw_upstream: Listener
) -> None:
    """`%0d%0a` in a query reaches upstream still percent-encoded: it never becomes a header."""
    proxy = await make_proxy(f"http://127.0.0.1:{raw_upstream.port}")
    target = "/v1/models?after=%0d%0aX-Injected:%20yes&limit=%0A1"
    answer = await exchange(proxy, [request("GET", target, b"Connection: close\r\n")])
    assert answer.status == 200
    [head] = raw_upstream.received
    request_line, *lines = head.decode("latin-1").split("\r\n")
    assert request_line == f"GET {target} HTTP/1.1"
    assert not any(line.lower().startswith("x-injected") for line in lines)


# --- The same answers from `tollgate serve`, one process or several ---

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "tollgate.example.yaml"
DEMO_KEY = b"tg-demo-key-change-me"  # the one key of the example policy


def _spawn_serve(port: int, workers: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    args = ["serve", "--port", str(port), "--workers", str(workers), "--config", str(EXAMPLE)]
    return subprocess.Popen(
        [sys.executable, "-m", "proxy", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.fixture(params=[1, 2], ids=["one worker", "two workers"])
async def served(request: pytest.FixtureRequest) -> AsyncIterator[int]:
    """`tollgate serve` in a process of its own (two workers share a real Redis), with a
    header count limit of 16 from the environment; its port once it answers."""
    workers: int = request.param
    port = free_port()
    env = {
        **os.environ,
        "TOLLGATE_UPSTREAM__BASE_URL": f"http://127.0.0.1:{free_port()}",
        "TOLLGATE_DATA_FILE": "",
        "TOLLGATE_HEADERS__MAX_COUNT": "16",
    }
    if workers > 1:
        redis: RedisServer = request.getfixturevalue("flush_redis")
        env |= {"TOLLGATE_STORE": "redis", "TOLLGATE_REDIS__URL": redis.url}
    process = _spawn_serve(port, workers, env)
    try:
        await _wait_until_listening(port, process)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)


async def _wait_until_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    for _ in range(400):  # 20 s at most
        assert process.poll() is None, "tollgate serve exited"
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return
    raise AssertionError(f"tollgate serve did not listen on {port}")


async def test_tollgate_serve_answers_malformed_http_in_openai_shape(served: int) -> None:
    """The production server runs the same runner as the tests: a CL+TE conflict, too many
    headers (16, from TOLLGATE_HEADERS__MAX_COUNT) and a chunk broken half way all get
    OpenAI's answers from every worker."""
    for _ in range(4):  # several connections, which the kernel spreads over the workers
        conflict = await exchange(served, [MALFORMED["content-length then transfer-encoding"]])
        assert conflict.status == 400
        assert "Content-Length and Transfer-Encoding" in conflict.error()["message"]
        crowded = await exchange(served, [request("GET", "/v1/models", _headers(20))])
        assert crowded.status == 431
        assert "16 headers" in crowded.error()["message"]
    head = _chunked_head("/v1/moderations", b"application/json").replace(
        CLIENT_KEY.encode(), DEMO_KEY
    )
    broken = await exchange(served, [head + _chunk(b'{"input"'), b"zz\r\n"], pause=0.2)
    assert broken.status == 400
    assert "chunked" in broken.error()["message"]


async def test_the_admin_listener_answers_malformed_http_in_openai_shape(
    make_proxy: MakeProxy,
) -> None:
    """The admin API on a port of its own runs the same runner: a CL+TE conflict there is
    OpenAI's 400 too, not aiohttp's plain text."""
    port = free_port()
    await make_proxy(admin=AdminSettings(port=port, host="127.0.0.1"))
    conflict = await exchange(port, [MALFORMED["content-length then transfer-encoding"]])
    assert conflict.status == 400
    assert "Content-Length and Transfer-Encoding" in conflict.error()["message"]
