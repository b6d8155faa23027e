"""Liveness and readiness probes, with the memory store and with a real Redis."""

from __future__ import annotations

import json

import aiohttp
from pydantic import SecretStr

from proxy.settings import RedisSettings
from tests.conftest import MakeProxy, Proxy, RedisServer, free_port


async def _probe(proxy: Proxy, path: str) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as client:
        async with client.get(proxy.url(path)) as response:
            return response.status, await response.json()


async def test_healthz_needs_no_key(proxy: Proxy) -> None:
    """/healthz answers 200 without authentication."""
    assert await _probe(proxy, "/healthz") == (200, {"status": "ok"})


async def test_ready_with_memory_store_and_live_upstream(proxy: Proxy) -> None:
    """/readyz is 200 when the store and the upstream both answer."""
    status, body = await _probe(proxy, "/readyz")
    assert status == 200
    assert body["checks"] == {"store": True, "upstream": True}


async def test_not_ready_without_upstream(make_proxy: MakeProxy) -> None:
    """/readyz is 503 and names the upstream when nothing listens there."""
    proxy = await make_proxy(f"http://127.0.0.1:{free_port()}")
    status, body = await _probe(proxy, "/readyz")
    assert status == 503
    assert body["checks"] == {"store": True, "upstream": False}


async def test_ready_with_redis(make_proxy: MakeProxy, redis_server: RedisServer) -> None:
    """With the Redis store, /readyz is 200 while redis-server answers."""
    redis = RedisSettings(url=SecretStr(redis_server.url))
    proxy = await make_proxy(store="redis", redis=redis)
    status, body = await _probe(proxy, "/readyz")
    assert status == 200
    assert body["checks"] == {"store": True, "upstream": True}


async def test_not_ready_with_redis_down(make_proxy: MakeProxy) -> None:
    """With the Redis store and no Redis, /readyz is 503, names the store, leaks no URL."""
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    proxy = await make_proxy(store="redis", redis=RedisSettings(url=SecretStr(url)))
    async with aiohttp.ClientSession() as client:
        async with client.get(proxy.url("/readyz")) as response:
            text = await response.text()
            assert response.status == 503
    assert json.loads(text)["checks"]["store"] is False
    assert "hunter2" not in text + proxy.log_text()
