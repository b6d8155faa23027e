"""The upstream room: key swap, headers both ways, streaming both ways, upstream failures."""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from proxy.fake_upstream import FAKE_UPSTREAM, create_fake_upstream
from tests.conftest import (
    CLIENT_KEY,
    UPSTREAM_KEY,
    UPSTREAM_ORG,
    UPSTREAM_PROJECT,
    MakeProxy,
    Proxy,
    ProxyBefore,
    Upstream,
    free_port,
)
from tests.healthy import assert_healthy

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
STEP = 5.0  # generous bound for one step that must happen; never a performance assertion


def stepwise_client() -> aiohttp.ClientSession:
    """A client that gives up when nothing arrives for one step, so a buffering proxy fails."""
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60, sock_read=STEP))


async def _error_of(response: aiohttp.ClientResponse) -> dict[str, Any]:
    body = await response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    error: dict[str, Any] = body["error"]
    return error


async def test_central_credentials_replace_the_clients(proxy: Proxy, upstream: Upstream) -> None:
    """Upstream sees the central key, organization and project, never the client's."""
    headers = {**AUTH, "OpenAI-Organization": "org-client", "OpenAI-Project": "proj_client"}
    async with aiohttp.ClientSession() as client:
        async with client.get(proxy.url("/v1/models"), headers=headers) as response:
            assert response.status == 200
    seen = upstream.state.received[-1].headers
    assert seen.getall("Authorization") == [f"Bearer {UPSTREAM_KEY}"]
    assert seen.getall("OpenAI-Organization") == [UPSTREAM_ORG]
    assert seen.getall("OpenAI-Project") == [UPSTREAM_PROJECT]
    assert CLIENT_KEY not in json.dumps(dict(seen))


async def test_hop_by_hop_request_headers_are_dropped(proxy: Proxy, upstream: Upstream) -> None:
    """Connection-scoped headers, and those the client names in Connection, stay behind."""
    headers = {
        **AUTH,
        "Connection": "keep-alive, X-Private-Hop",
        "X-Private-Hop": "1",
        "Proxy-Authorization": "Basic c2VjcmV0",
        "Keep-Alive": "timeout=5",
        "X-End-To-End": "kept",
    }
    async with aiohttp.ClientSession() as client:
        async with client.get(proxy.url("/v1/models"), headers=headers) as response:
            assert response.status == 200
    seen = upstream.state.received[-1].headers
    for name in ("X-Private-Hop", "Proxy-Authorization", "Keep-Alive"):
        assert name not in seen
    assert seen["X-End-To-End"] == "kept"


AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")


async def test_the_proxy_adds_no_header_of_its_own(proxy: Proxy, upstream: Upstream) -> None:
    """aiohttp's client adds Accept, Accept-Encoding (asking for gzip, which Tollgate would
    then relay to a client that never asked for it), User-Agent and a Content-Type guessed
    from the body: none of them reaches upstream unless the client sent it, as it sent it."""
    bare = aiohttp.ClientSession(skip_auto_headers=AUTO_HEADERS)
    async with bare as client:
        async with client.post(proxy.url("/v1/files"), data=b"raw", headers=AUTH) as response:
            await response.read()  # whatever upstream makes of it: what it received counts
        sent = {**AUTH, "User-Agent": "OpenAI/Python 1.0", "Accept-Encoding": "br"}
        async with client.get(proxy.url("/v1/models"), headers=sent) as response:
            assert response.status == 200
    bare_post, with_headers = upstream.state.received[-2:]
    assert [name for name in AUTO_HEADERS if name in bare_post.headers] == []
    assert with_headers.headers.getall("User-Agent") == ["OpenAI/Python 1.0"]
    assert with_headers.headers.getall("Accept-Encoding") == ["br"]
    assert "Accept" not in with_headers.headers


def _header_upstream(request_id: str | None) -> web.Application:
    """An upstream whose answer carries hop-by-hop, cookie and OpenAI headers."""

    async def handler(request: web.Request) -> web.Response:
        headers = {
            "Connection": "X-Upstream-Hop",
            "X-Upstream-Hop": "secret",
            "Proxy-Authenticate": "Basic",
            "Set-Cookie": "__cf_bm=abc; path=/",
            "openai-processing-ms": "12",
            "openai-version": "2020-10-01",
        }
        if request_id:
            headers["x-request-id"] = request_id
        return web.json_response({"object": "list", "data": []}, headers=headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


async def test_answer_headers_keep_openai_ones_and_drop_hop_by_hop(
    proxy_before: ProxyBefore,
) -> None:
    """x-request-id and openai-* come back; hop-by-hop and Set-Cookie do not."""
    proxy = await proxy_before(_header_upstream("req_from_upstream"))
    async with aiohttp.ClientSession() as client:
        async with client.get(proxy.url("/v1/models"), headers=AUTH) as response:
            assert response.status == 200
            headers = response.headers
    assert headers["x-request-id"] == "req_from_upstream"
    assert headers["openai-processing-ms"] == "12"
    assert headers["openai-version"] == "2020-10-01"
    for name in ("X-Upstream-Hop", "Proxy-Authenticate", "Set-Cookie"):
        assert name not in headers
    assert json.loads(proxy.log_lines()[-1])["request_id"] == "req_from_upstream"


async def test_a_request_id_is_made_where_upstream_gives_none(
    proxy_before: ProxyBefore,
) -> None:
    """Without an upstream x-request-id, Tollgate's own id is returned and logged."""
    proxy = await proxy_before(_header_upstream(None))
    async with aiohttp.ClientSession() as client:
        async with client.get(proxy.url("/v1/models"), headers=AUTH) as response:
            request_id = response.headers["x-request-id"]
    assert re.fullmatch(r"req_[0-9a-f]{32}", request_id)
    assert json.loads(proxy.log_lines()[-1])["request_id"] == request_id


@pytest.mark.parametrize("status", [400, 404, 429, 500, 502, 503])
async def test_upstream_errors_are_relayed_as_they_are(
    proxy: Proxy, upstream: Upstream, status: int
) -> None:
    """An upstream 4xx or 5xx reaches the client with its status and body unchanged."""
    upstream.state.knobs.status = status
    async with aiohttp.ClientSession() as client:
        async with client.get(proxy.url("/v1/models"), headers=AUTH) as response:
            assert response.status == status
            error = await _error_of(response)
    assert "Tollgate" not in error["message"]
    assert len(upstream.state.received) == 1
    upstream.state.knobs.status = None
    await assert_healthy(proxy)


async def test_connection_refused_is_a_502(
    make_proxy: MakeProxy, aiohttp_server: AiohttpServer
) -> None:
    """An upstream nobody listens on gives 502 in OpenAI's shape; once it listens, all is well."""
    port = free_port()
    proxy = await make_proxy(f"http://127.0.0.1:{port}")
    async with aiohttp.ClientSession() as client:
        async with client.get(proxy.url("/v1/models"), headers=AUTH) as response:
            assert response.status == 502
            error = await _error_of(response)
    assert error["type"] == "server_error"
    await aiohttp_server(_fake_upstream(), port=port)
    await assert_healthy(proxy)


def _fake_upstream() -> web.Application:
    """A fresh fake upstream expecting the central key."""
    app = create_fake_upstream()
    app[FAKE_UPSTREAM].knobs.expected_key = UPSTREAM_KEY
    return app


async def test_reset_mid_body_is_a_502(proxy: Proxy, upstream: Upstream) -> None:
    """An upstream that resets half way through a JSON answer gives 502, not half a body."""
    upstream.state.knobs.reset_mid_body = True
    async with aiohttp.ClientSession() as client:
        async with client.get(proxy.url("/v1/models"), headers=AUTH) as response:
            assert response.status == 502
            await _error_of(response)
    upstream.state.knobs.reset_mid_body = False
    await assert_healthy(proxy)


async def test_a_slow_upstream_is_a_504(make_proxy: MakeProxy, upstream: Upstream) -> None:
    """An upstream slower than the read timeout gives 504 in OpenAI's shape."""
    upstream.state.knobs.latency = 2.0
    proxy = await make_proxy(upstream={"read_timeout": 0.1})
    async with aiohttp.ClientSession() as client:
        async with client.get(proxy.url("/v1/models"), headers=AUTH) as response:
            assert response.status == 504
            error = await _error_of(response)
    assert error["type"] == "server_error"
    upstream.state.knobs.latency = 0.0
    await assert_healthy(proxy)


class Gate:
    """Lets a test hold an upstream back until the client has seen something."""

    def __init__(self) -> None:
        self.first_sent = asyncio.Event()
        self.release = asyncio.Event()
        self.upstream_gone = asyncio.Event()
        self.received_first_chunk = asyncio.Event()


def _sse_upstream(gate: Gate) -> web.Application:
    """An upstream run stream that sends one event, then waits for the test's word."""

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            await response.write(b'event: thread.run.created\ndata: {"id": "run_1"}\n\n')
            gate.first_sent.set()
            await gate.release.wait()
            for _ in range(200):
                await response.write(b'event: thread.run.in_progress\ndata: {"id": "run_1"}\n\n')
                await asyncio.sleep(0.02)
            await response.write(b"event: done\ndata: [DONE]\n\n")
        except (ConnectionError, asyncio.CancelledError):
            gate.upstream_gone.set()
            raise
        return response

    app = web.Application()
    app.router.add_post("/v1/threads/{thread_id}/runs", handler)
    return app


async def _read_until(response: aiohttp.ClientResponse, marker: bytes) -> bytes:
    seen = b""
    while marker not in seen:
        chunk = await response.content.readany()
        assert chunk, "stream ended early"
        seen += chunk
    return seen


def _start_run_stream(
    client: aiohttp.ClientSession, proxy: Proxy
) -> aiohttp.client._RequestContextManager:
    """Ask Tollgate for a streamed run."""
    body = {"assistant_id": "asst_1", "stream": True}
    return client.post(proxy.url("/v1/threads/thread_1/runs"), json=body, headers=AUTH)


async def test_a_streamed_run_reaches_the_client_event_by_event(
    proxy_before: ProxyBefore,
) -> None:
    """The first event arrives while upstream is still holding the rest back."""
    gate = Gate()
    proxy = await proxy_before(_sse_upstream(gate))
    try:
        async with stepwise_client() as client:
            async with _start_run_stream(client, proxy) as response:
                assert response.headers["Content-Type"].startswith("text/event-stream")
                first = await asyncio.wait_for(_read_until(response, b"run.created"), STEP)
                assert b"thread.run.created" in first
                gate.release.set()
                rest = await response.read()
    finally:
        gate.release.set()
    assert rest.endswith(b"data: [DONE]\n\n")


async def test_a_client_leaving_mid_stream_cancels_the_upstream_request(
    proxy_before: ProxyBefore,
) -> None:
    """When the client hangs up mid-stream, Tollgate drops its upstream connection too."""
    gate = Gate()
    proxy = await proxy_before(_sse_upstream(gate))
    try:
        async with stepwise_client() as client:
            async with _start_run_stream(client, proxy) as response:
                await asyncio.wait_for(_read_until(response, b"run.created"), STEP)
                response.close()
    finally:
        gate.release.set()
    await asyncio.wait_for(gate.upstream_gone.wait(), STEP)
    await asyncio.sleep(0.05)
    line = json.loads(proxy.log_lines()[-1])
    assert line["status"] == 499
    assert line["aborted"] == "client_gone"


async def test_an_upstream_stream_cut_half_way_is_cut_for_the_client(
    proxy: Proxy, upstream: Upstream
) -> None:
    """An SSE stream that upstream breaks off never looks complete to the client."""
    upstream.state.knobs.reset_after_events = 2
    async with aiohttp.ClientSession() as client:
        async with _start_run_stream(client, proxy) as response:
            assert response.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()
    line = json.loads(proxy.log_lines()[-1])
    assert line["aborted"] == "upstream_broke"
    upstream.state.knobs.reset_after_events = None
    await assert_healthy(proxy)


def _upload_upstream(gate: Gate, bodies: list[bytes]) -> web.Application:
    """An upstream that signals as soon as the first bytes of a body arrive."""

    async def handler(request: web.Request) -> web.Response:
        chunks = []
        async for chunk in request.content.iter_any():
            chunks.append(chunk)
            gate.received_first_chunk.set()
        bodies.append(b"".join(chunks))
        return web.json_response({"id": "part_1", "object": "upload.part"})

    app = web.Application(client_max_size=1024**3)
    app.router.add_post("/{tail:.*}", handler)
    return app


async def _body_after_gate(gate: Gate, head: bytes, tail: bytes) -> AsyncIterator[bytes]:
    """Send `head`, wait until upstream has bytes, then send `tail`."""
    yield head
    await asyncio.wait_for(gate.received_first_chunk.wait(), STEP)
    yield tail


DATA_PART = (
    b'--b\r\nContent-Disposition: form-data; name="data"; filename="part"\r\n'
    b"Content-Type: application/octet-stream\r\n\r\n"
)


async def test_upload_parts_stream_to_upstream_before_the_body_ends(
    proxy_before: ProxyBefore,
) -> None:
    """Upstream receives an upload part's first bytes before the client has sent the rest."""
    gate, bodies = Gate(), list[bytes]()
    proxy = await proxy_before(_upload_upstream(gate, bodies))
    head = DATA_PART + b"x" * 65536
    tail = b"y" * (4 * 1024 * 1024) + b"\r\n--b--\r\n"
    headers = {**AUTH, "Content-Type": "multipart/form-data; boundary=b"}
    async with stepwise_client() as client:
        url = proxy.url("/v1/uploads/upload_1/parts")
        body = _body_after_gate(gate, head, tail)
        async with client.post(url, data=body, headers=headers) as response:
            assert response.status == 200
    assert bodies == [head + tail]


def _form(fields: dict[str, str], file_head: bytes) -> bytes:
    """A multipart form: text fields first, then the head of one PNG file part."""
    parts = [
        f'--b\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    file_part = (
        b'--b\r\nContent-Disposition: form-data; name="image"; filename="otter.png"\r\n'
        b"Content-Type: image/png\r\n\r\n" + file_head
    )
    return b"".join(parts) + file_part


async def test_image_edit_forms_stream_to_upstream_before_the_file_ends(
    proxy_before: ProxyBefore,
) -> None:
    """An image edit's fields are read, and its file streams on before it has all arrived.

    Only with validation `off`: validating needs the whole form (the mask follows the image),
    so a validating Tollgate holds the form before sending it (test_validate.py). The file
    here is not a real PNG either.
    """
    gate, bodies = Gate(), list[bytes]()
    proxy = await proxy_before(_upload_upstream(gate, bodies), validation="off")
    head = _form({"prompt": "an otter", "model": "dall-e-2", "n": "2"}, b"\x89PNG" + b"0" * 100)
    tail = b"1" * (2 * 1024 * 1024) + b"\r\n--b--\r\n"
    headers = {**AUTH, "Content-Type": "multipart/form-data; boundary=b"}
    async with stepwise_client() as client:
        body = _body_after_gate(gate, head, tail)
        async with client.post(proxy.url("/v1/images/edits"), data=body, headers=headers) as r:
            assert r.status == 200
    [received] = bodies
    assert received.endswith(head + tail)
    assert re.fullmatch(
        rb'--b\r\nContent-Disposition: form-data; name="user"\r\n\r\ntg-user-[0-9a-f]{32}\r\n',
        received[: -len(head + tail)],
    )
    line = json.loads(proxy.log_lines()[-1])
    assert (line["operation"], line["model"]) == ("images.edit", "dall-e-2")


class Unaccepting:
    """A loopback listener whose accept queue is full: new connections hang in the handshake,
    until `serve` empties the queue and answers on it as the fake upstream."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(0)
        self.port: int = self.listener.getsockname()[1]
        self.fillers: list[socket.socket] = []
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", self.port))
            self.fillers.append(filler)
        self.runner: web.AppRunner | None = None

    async def serve(self) -> None:
        for filler in self.fillers:
            filler.close()
        self.runner = web.AppRunner(_fake_upstream())
        await self.runner.setup()
        await web.SockSite(self.runner, self.listener).start()

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
        for sock in [*self.fillers, self.listener]:
            sock.close()


@pytest.fixture
async def unaccepting() -> AsyncIterator[Unaccepting]:
    listener = Unaccepting()
    yield listener
    await listener.close()


async def test_a_connect_timeout_is_a_504(make_proxy: MakeProxy, unaccepting: Unaccepting) -> None:
    """An upstream that never completes the connection gives 504 after the connect timeout;
    once it accepts again, all is well."""
    proxy = await make_proxy(
        f"http://127.0.0.1:{unaccepting.port}", upstream={"connect_timeout": 0.2}
    )
    async with stepwise_client() as client:
        async with client.get(proxy.url("/v1/models"), headers=AUTH) as response:
            assert response.status == 504
            error = await _error_of(response)
    assert error["type"] == "server_error"
    await unaccepting.serve()
    await assert_healthy(proxy)
