"""What every fault test checks after its fault: an OpenAI-shaped error, and a proxy still well."""

from __future__ import annotations

from typing import Any

import aiohttp

from tests.conftest import CLIENT_KEY, Proxy

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}


async def openai_error(response: aiohttp.ClientResponse) -> dict[str, Any]:
    """The `error` object of an answer, which must be exactly OpenAI's shape."""
    assert response.content_type == "application/json"
    body = await response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str)
    assert error["message"]
    assert isinstance(error["type"], str)
    assert error["type"]
    return error


async def assert_healthy(proxy: Proxy, key: str = CLIENT_KEY) -> None:
    """`/readyz` answers 200, and a normal request goes upstream and succeeds."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as client:
        async with client.get(proxy.url("/readyz")) as ready:
            assert ready.status == 200, await ready.text()
        # no-cache: revalidate with upstream, so a cached answer cannot pass for a working path
        headers = {"Authorization": f"Bearer {key}", "Cache-Control": "no-cache"}
        async with client.get(proxy.url("/v1/models"), headers=headers) as response:
            assert response.status == 200, await response.text()
            listing = await response.json()
    assert listing["object"] == "list"
    assert listing["data"]
