"""Upstream faults through the fake upstream's knobs: each answer is OpenAI's shape with the right
status, nothing broken is cached, and the proxy is healthy afterwards.

Faults covered elsewhere, each ending with the same health check: refused (502), reset mid-body
(502), read and connect timeouts (504), an SSE stream cut half way, upstream 4xx/5xx relayed
(tests/test_upstream.py); errors never cached (tests/test_cache.py); a moderation verdict that
fails or is malformed (tests/test_moderation.py).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import openai
import pytest

from proxy.limits import LimitsPolicy
from tests.conftest import (
    CLIENT_KEY,
    MakeProxy,
    Proxy,
    Upstream,
    policy_for_tests,
    sent_on,
    without_moderation,
)
from tests.healthy import AUTH, assert_healthy, openai_error
from tests.samples import deprecated


def sdk_for(proxy: Proxy) -> openai.AsyncOpenAI:
    """The SDK, strict about shapes, without retries (each answer is the one under test)."""
    return openai.AsyncOpenAI(
        base_url=proxy.url("/v1"),
        api_key=CLIENT_KEY,
        max_retries=0,
        _strict_response_validation=True,
    )


def upstream_calls(upstream: Upstream, path: str) -> int:
    return sum(1 for seen in upstream.state.received if seen.path == path)


async def test_a_slow_upstream_within_the_timeout_still_succeeds(
    make_proxy: MakeProxy, upstream: Upstream
) -> None:
    """Slow, but within the read timeout: a read and a slowly streamed run both complete."""
    upstream.state.knobs.latency = 0.3
    upstream.state.knobs.event_pause = 0.1
    proxy = await make_proxy(upstream={"read_timeout": 10.0})
    client = sdk_for(proxy)
    try:
        models = await client.models.list()
        with deprecated():
            run = await client.beta.threads.runs.create(
                "thread_1", assistant_id="asst_1", stream=True
            )
        events = [event.event async for event in run]
    finally:
        await client.close()
    assert [model.id for model in models.data][:2] == ["gpt-4o", "gpt-4o-mini"]
    assert events[0] == "thread.run.created"
    assert events[-1] == "thread.run.completed"
    upstream.state.knobs.latency = upstream.state.knobs.event_pause = 0.0
    await assert_healthy(proxy)


async def test_a_stream_silent_past_the_read_timeout_is_cut_and_logged(
    make_proxy: MakeProxy, upstream: Upstream
) -> None:
    """Upstream stops sending mid-stream for longer than the read timeout: the client's stream
    ends abnormally (never as if complete), the log says so, and the proxy carries on."""
    upstream.state.knobs.event_pause = 2.0
    proxy = await make_proxy(upstream={"read_timeout": 0.3})
    body = {"assistant_id": "asst_1", "stream": True}
    async with aiohttp.ClientSession() as client:
        url = proxy.url("/v1/threads/thread_1/runs")
        async with client.post(url, json=body, headers=AUTH) as response:
            assert response.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()
    line = json.loads(proxy.log_lines()[-1])
    assert (line["aborted"], line["upstream_error"]) == ("upstream_broke", "reset")
    upstream.state.knobs.event_pause = 0.0
    await assert_healthy(proxy)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"object": "list", "data": [', id="truncated-json"),
        pytest.param(b"<html>upstream maintenance</html>", id="html"),
        pytest.param(b"", id="empty"),
    ],
)
async def test_a_malformed_listing_is_relayed_but_never_cached(
    proxy: Proxy, upstream: Upstream, body: bytes
) -> None:
    """A 200 whose body is not JSON reaches the client as it came and is not stored: once
    upstream is well again, the next read goes to it and gets the real listing."""
    upstream.state.knobs.malformed["/v1/models"] = body
    async with aiohttp.ClientSession() as client:
        for _ in range(2):
            async with client.get(proxy.url("/v1/models"), headers=AUTH) as response:
                assert response.status == 200
                assert await response.read() == body
                assert response.headers["x-tollgate-cache"] == "miss"
    upstream.state.knobs.malformed.clear()
    async with aiohttp.ClientSession() as client:
        async with client.get(proxy.url("/v1/models"), headers=AUTH) as response:
            assert response.headers["x-tollgate-cache"] == "miss"
            assert (await response.json())["object"] == "list"
    assert upstream_calls(upstream, "/v1/models") == 3
    await assert_healthy(proxy)


async def test_a_malformed_verdict_fails_closed_and_is_not_kept(
    make_proxy: MakeProxy, upstream: Upstream
) -> None:
    """A moderation answer of the wrong shape is no verdict: 503 `moderation_unavailable`
    (the default policy), the image endpoint is never called, and nothing is cached: once
    moderation is well again the same prompt is checked afresh and generated."""
    upstream.state.knobs.malformed["/v1/moderations"] = b'{"id": "m", "results": [1]}'
    proxy = await make_proxy()
    async with aiohttp.ClientSession() as client:
        url, prompt = proxy.url("/v1/images/generations"), {"prompt": "an otter"}
        for _ in range(2):
            async with client.post(url, json=prompt, headers=AUTH) as response:
                assert response.status == 503
                error = await openai_error(response)
        assert (error["type"], error["code"]) == ("server_error", "moderation_unavailable")
        assert [seen.path for seen in upstream.state.received] == ["/v1/moderations"] * 2
        upstream.state.knobs.malformed.clear()
        async with client.post(url, json=prompt, headers=AUTH) as response:
            assert response.status == 200
    assert upstream_calls(upstream, "/v1/moderations") == 3
    assert upstream_calls(upstream, "/v1/images/generations") == 1
    await assert_healthy(proxy)


async def test_an_upstream_429_is_relayed_with_its_retry_after_and_not_cached(
    make_proxy: MakeProxy, upstream: Upstream
) -> None:
    """Upstream's 429 reaches the client with its body and Retry-After, beside Tollgate's own
    x-ratelimit-* headers; it is not cached, and it costs the client none of its allowance."""
    upstream.state.knobs.status, upstream.state.knobs.retry_after = 429, "7"
    limits = LimitsPolicy.model_validate({"users": {"alice": ["3/minute"]}})
    proxy = await make_proxy(policy=policy_for_tests().model_copy(update={"limits": limits}))
    async with aiohttp.ClientSession() as client:
        for _ in range(4):  # past the limit of 3: upstream's 429s are refunded
            async with client.get(proxy.url("/v1/models"), headers=AUTH) as response:
                assert response.status == 429
                error = await openai_error(response)
                assert response.headers["Retry-After"] == "7"
                assert response.headers["x-ratelimit-limit-requests"] == "3"
                assert response.headers["x-ratelimit-remaining-requests"] == "2"
    assert (error["type"], error["code"]) == ("requests", "rate_limit_exceeded")
    assert upstream_calls(upstream, "/v1/models") == 4
    upstream.state.knobs.status = None
    await assert_healthy(proxy)


async def test_the_sdk_sees_upstream_rate_limits_as_rate_limit_errors(
    make_proxy: MakeProxy, upstream: Upstream
) -> None:
    """Through the official SDK: upstream's 429 is a `RateLimitError` carrying Retry-After."""
    upstream.state.knobs.status, upstream.state.knobs.retry_after = 429, "3"
    proxy = await make_proxy(policy=without_moderation(policy_for_tests()))
    client = sdk_for(proxy)
    try:
        with pytest.raises(openai.RateLimitError) as refused:
            await client.images.generate(prompt="an otter")
    finally:
        await client.close()
    assert refused.value.response.headers["retry-after"] == "3"
    assert refused.value.code == "rate_limit_exceeded"
    assert len(sent_on(upstream)) == 1
    upstream.state.knobs.status = None
    await assert_healthy(proxy)


LISTING = (
    b'{"object": "list", "data": '
    b'[{"id": "gpt-4o", "object": "model", "created": 1, "owned_by": "system"}]}'
)


class Faulty:
    """A raw TCP upstream that answers GET /v1/models with broken HTTP until it is `mended`,
    and answers properly otherwise (so the proxy can be seen to recover)."""

    def __init__(self, fault: bytes) -> None:
        self.fault = fault
        self.mended = False
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._answer, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        method, path, _ = head.split(b" ", 2)
        ok = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: application/json\r\n"
        if method == b"HEAD":
            writer.write(b"HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n")
        elif path == b"/v1/models" and not self.mended:
            writer.write(self.fault)
        else:
            writer.write(ok + b"Content-Length: %d\r\n\r\n" % len(LISTING) + LISTING)
        await writer.drain()
        writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def faulty() -> AsyncIterator[list[Faulty]]:
    started: list[Faulty] = []
    yield started
    for server in started:
        await server.close()


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(b"", id="closed-without-answer"),
        pytest.param(b"garbage\r\n\r\n", id="no-status-line"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{", id="short-body"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", id="bad-chunk"
        ),
    ],
)
async def test_broken_http_from_upstream_is_a_502(
    make_proxy: MakeProxy, faulty: list[Faulty], fault: bytes
) -> None:
    """An upstream answer that is not valid HTTP, or ends before its declared length, is a
    502 in OpenAI's shape, never half a body passed off as whole."""
    upstream = Faulty(fault)
    faulty.append(upstream)
    proxy = await make_proxy(await upstream.start(), policy=without_moderation(policy_for_tests()))
    async with aiohttp.ClientSession() as client:
        async with client.get(proxy.url("/v1/models"), headers=AUTH) as response:
            assert response.status == 502
            error = await openai_error(response)
    assert (error["type"], error["code"]) == ("server_error", "upstream_unavailable")
    upstream.mended = True
    await assert_healthy(proxy)
