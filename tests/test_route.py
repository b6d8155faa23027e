"""The route room and the error room: what reaches upstream, and what is refused how."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from yarl import URL

from tests.conftest import CLIENT_KEY, MakeProxy, Proxy, Upstream

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}


async def _refusal(response: aiohttp.ClientResponse, status: int) -> dict[str, Any]:
    """The OpenAI error body of a refusal with `status`."""
    assert response.status == status
    assert response.content_type == "application/json"
    body = await response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert response.headers["x-request-id"].startswith("req_")
    error: dict[str, Any] = body["error"]
    return error


@pytest.mark.parametrize(
    ("path", "body", "content_type"),
    [
        ("/v1/images/generations", b'{"prompt": "otter"', "application/json"),
        ("/v1/moderations", b"\xff\xfe not utf-8", "application/json"),
        ("/v1/assistants", b'{"model": "gpt-4o"}', "text/plain"),
        ("/v1/threads/thread_1/runs", b'["assistant_id"]', "application/json"),
        ("/v1/images/edits", b'{"prompt": "otter"}', "application/json"),
        ("/v1/images/variations", b"--b--\r\n", "multipart/form-data"),
    ],
)
async def test_bad_bodies_on_documented_endpoints_are_a_400(
    proxy: Proxy, upstream: Upstream, path: str, body: bytes, content_type: str
) -> None:
    """Malformed JSON, a non-object, or the wrong content type: 400, and upstream sees nothing."""
    headers = {**AUTH, "Content-Type": content_type}
    async with aiohttp.ClientSession() as client:
        async with client.post(proxy.url(path), data=body, headers=headers) as response:
            error = await _refusal(response, 400)
    assert error["type"] == "invalid_request_error"
    assert upstream.state.received == []


async def test_a_declared_length_over_the_limit_is_a_413(
    make_proxy: MakeProxy, upstream: Upstream
) -> None:
    """A Content-Length over the limit is refused before a byte is read or forwarded."""
    proxy = await make_proxy(max_request_bytes=4096)
    async with aiohttp.ClientSession() as client:
        url = proxy.url("/v1/uploads/upload_1/parts")
        async with client.post(url, data=b"x" * 5000, headers=AUTH) as response:
            error = await _refusal(response, 413)
    assert "4096" in error["message"]
    assert upstream.state.received == []


async def test_a_json_body_over_the_limit_is_a_413(
    make_proxy: MakeProxy, upstream: Upstream
) -> None:
    """A JSON body sent without a length is cut off at the limit with 413."""
    proxy = await make_proxy(max_request_bytes=4096)

    async def chunked() -> AsyncIterator[bytes]:
        yield b'{"input": "'
        yield b"x" * 8192
        yield b'"}'

    headers = {**AUTH, "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as client:
        url = proxy.url("/v1/moderations")
        async with client.post(url, data=chunked(), headers=headers) as response:
            await _refusal(response, 413)
    assert upstream.state.received == []


async def test_a_streamed_body_over_the_limit_is_a_413(
    make_proxy: MakeProxy, upstream: Upstream
) -> None:
    """A chunked upload that grows past the limit is refused with 413 and never completes."""
    proxy = await make_proxy(max_request_bytes=64 * 1024)

    async def chunked() -> AsyncIterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="data"; filename="part"\r\n\r\n'
        for _ in range(16):
            yield b"x" * 16384

    headers = {**AUTH, "Content-Type": "multipart/form-data; boundary=b"}
    async with aiohttp.ClientSession() as client:
        url = proxy.url("/v1/uploads/upload_1/parts")
        async with client.post(url, data=chunked(), headers=headers) as response:
            await _refusal(response, 413)
    assert all(len(seen.body) <= 64 * 1024 for seen in upstream.state.received)


async def test_unknown_v1_paths_pass_through(proxy: Proxy, upstream: Upstream) -> None:
    """An undocumented /v1 path reaches upstream with method, path, query and body intact."""
    headers = {**AUTH, "Content-Type": "application/json"}
    body = b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}'
    async with aiohttp.ClientSession() as client:
        url = proxy.url("/v1/chat/completions?trace=1")
        async with client.post(url, data=body, headers=headers) as response:
            assert response.status == 200
    seen = upstream.state.received[-1]
    assert (seen.method, seen.path, seen.query, seen.body) == (
        "POST",
        "/v1/chat/completions",
        "trace=1",
        body,
    )
    assert json.loads(proxy.log_lines()[-1])["operation"] == "passthrough"


async def test_pass_through_switched_off_gives_404(
    make_proxy: MakeProxy, upstream: Upstream
) -> None:
    """With pass-through off, an undocumented /v1 path is OpenAI's 404 and goes nowhere."""
    proxy = await make_proxy(passthrough=False)
    async with aiohttp.ClientSession() as client:
        async with client.get(proxy.url("/v1/files"), headers=AUTH) as response:
            error = await _refusal(response, 404)
        async with client.get(proxy.url("/v1/models"), headers=AUTH) as response:
            assert response.status == 200
    assert error["message"] == "Invalid URL (GET /v1/files)"
    assert [seen.path for seen in upstream.state.received] == ["/v1/models"]


@pytest.mark.parametrize("path", ["/", "/v2/models", "/admin", "/models", "/v1"])
async def test_paths_outside_v1_are_openai_404s(
    proxy: Proxy, upstream: Upstream, path: str
) -> None:
    """Anything outside /v1/ is an OpenAI-shaped 404 and never reaches upstream."""
    async with aiohttp.ClientSession() as client:
        async with client.get(proxy.url(path), headers=AUTH) as response:
            error = await _refusal(response, 404)
    assert error["message"] == f"Invalid URL (GET {path})"
    assert upstream.state.received == []


@pytest.mark.parametrize(
    "raw_path", ["/v1/../admin", "/v1/models/%2e%2e/x", "/v1/models/a%2Fb", "/v1/./models"]
)
async def test_paths_that_climb_out_of_v1_reach_nothing(
    proxy: Proxy, upstream: Upstream, raw_path: str
) -> None:
    """Dot segments and encoded slashes are refused, never forwarded."""
    url = URL(proxy.url("")).with_path(raw_path, encoded=True)
    async with aiohttp.ClientSession() as client:
        async with client.get(url, headers=AUTH) as response:
            await _refusal(response, 404)
    assert upstream.state.received == []


async def test_documented_bodies_are_forwarded_byte_for_byte(
    proxy: Proxy, upstream: Upstream
) -> None:
    """A parsed JSON body goes upstream exactly as the client wrote it."""
    body = b'{ "input" : "I want to kill them.",\n  "model":"omni-moderation-latest" }'
    headers = {**AUTH, "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as client:
        async with client.post(proxy.url("/v1/moderations"), data=body, headers=headers) as r:
            assert r.status == 200
    assert upstream.state.received[-1].body == body
    line = json.loads(proxy.log_lines()[-1])
    assert (line["operation"], line["model"]) == ("moderations.create", "omni-moderation-latest")
