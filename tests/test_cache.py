"""The cache: deterministic reads served from the store, per credential scope, with no stampede."""

from __future__ import annotations

import asyncio
import hashlib
import signal
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr

from proxy.app import CACHE
from proxy.cachestore import MemoryCache
from proxy.settings import CacheSettings, RedisSettings
from tests.conftest import (
    ADMIN_TOKEN,
    CLIENT_KEY,
    OTHER_KEY,
    FakeClock,
    MakeProxy,
    Proxy,
    ProxyBefore,
    RedisServer,
    Upstream,
    free_port,
)

ALICE = {"Authorization": f"Bearer {CLIENT_KEY}"}
BOB = {"Authorization": f"Bearer {OTHER_KEY}"}


async def get(
    proxy: Proxy, path: str = "/v1/models", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """GET through Tollgate: status, headers, body."""
    async with aiohttp.ClientSession() as client:
        async with client.get(proxy.url(path), headers=headers or ALICE) as response:
            return response.status, dict(response.headers), await response.read()


def calls(upstream: Upstream, path: str = "/v1/models") -> int:
    """How many requests for `path` reached the fake upstream."""
    return sum(1 for seen in upstream.state.received if seen.path == path)


async def test_a_listing_is_served_from_the_cache_byte_for_byte(
    make_proxy: MakeProxy, upstream: Upstream, store_settings: dict[str, Any]
) -> None:
    """The second identical read is a hit: same status, body and content headers, with Age."""
    proxy = await make_proxy(**store_settings)
    status, first_headers, first_body = await get(proxy)
    again, headers, body = await get(proxy)
    assert (status, again) == (200, 200)
    assert first_headers["x-tollgate-cache"] == "miss"
    assert headers["x-tollgate-cache"] == "hit"
    assert int(headers["Age"]) >= 0
    assert body == first_body
    assert headers["Content-Type"] == first_headers["Content-Type"]
    assert calls(upstream) == 1


async def test_the_query_string_is_part_of_the_key_in_any_order(proxy: Proxy) -> None:
    """A listing with a query is not the plain listing's entry; the same query in another
    order is the same entry."""
    assert (await get(proxy))[1]["x-tollgate-cache"] == "miss"
    assert (await get(proxy, "/v1/models?a=1&b=2"))[1]["x-tollgate-cache"] == "miss"
    assert (await get(proxy, "/v1/models?b=2&a=1"))[1]["x-tollgate-cache"] == "hit"
    assert (await get(proxy))[1]["x-tollgate-cache"] == "hit"


async def test_entries_expire_on_the_injected_clock(
    make_proxy: MakeProxy, upstream: Upstream, store_settings: dict[str, Any]
) -> None:
    """A hit until the TTL has passed, a miss from then on; Age counts the clock's seconds."""
    clock = FakeClock()
    proxy = await make_proxy(clock=clock, cache=CacheSettings(ttl=60), **store_settings)
    await get(proxy)
    clock.advance(59)
    _, headers, _ = await get(proxy)
    assert (headers["x-tollgate-cache"], headers["Age"]) == ("hit", "59")
    clock.advance(1)
    _, headers, _ = await get(proxy)
    assert headers["x-tollgate-cache"] == "miss"
    assert calls(upstream) == 2


def _per_credential_upstream() -> web.Application:
    """An upstream whose model list depends on the credential that asks."""

    async def models(request: web.Request) -> web.Response:
        owner = hashlib.sha256(request.headers["Authorization"].encode()).hexdigest()[:12]
        data = [{"id": f"ft:gpt-4o:{owner}", "object": "model", "created": 1, "owned_by": owner}]
        return web.json_response({"object": "list", "data": data})

    app = web.Application()
    app.router.add_get("/v1/models", models)
    return app


async def test_teams_on_different_credentials_never_see_each_others_listing(
    proxy_before: ProxyBefore, store_settings: dict[str, Any]
) -> None:
    """alice (central credential) and bob (blue credential) each get, and keep, their own list,
    in the embedded cache and in Redis alike."""
    proxy = await proxy_before(_per_credential_upstream(), **store_settings)
    answers = {}
    for name, headers in (("alice", ALICE), ("bob", BOB), ("alice2", ALICE), ("bob2", BOB)):
        _, seen_headers, answers[name] = await get(proxy, headers=headers)
        assert seen_headers["x-tollgate-cache"] == ("hit" if name.endswith("2") else "miss")
    assert answers["alice"] == answers["alice2"]
    assert answers["bob"] == answers["bob2"]
    assert answers["alice"] != answers["bob"]


async def test_concurrent_cold_requests_make_one_upstream_call(
    make_proxy: MakeProxy, upstream: Upstream, store_settings: dict[str, Any]
) -> None:
    """50 concurrent identical misses in one process: the upstream sees one request."""
    upstream.state.knobs.latency = 0.3
    proxy = await make_proxy(**store_settings)
    results = await asyncio.gather(*(get(proxy) for _ in range(50)))
    assert {status for status, _, _ in results} == {200}
    assert len({body for _, _, body in results}) == 1
    assert calls(upstream) == 1


async def test_replicas_sharing_redis_fetch_about_once_each_or_better(
    make_proxy: MakeProxy, upstream: Upstream, flush_redis: Any
) -> None:
    """Three replicas, 20 cold requests each at once: at most one upstream call per replica."""
    upstream.state.knobs.latency = 0.3
    redis = RedisSettings(url=SecretStr(flush_redis.url))
    replicas = [await make_proxy(store="redis", redis=redis) for _ in range(3)]
    results = await asyncio.gather(*(get(p) for p in replicas for _ in range(20)))
    assert {status for status, _, _ in results} == {200}
    assert 1 <= calls(upstream) <= 3


async def test_no_cache_revalidates_and_no_store_bypasses(proxy: Proxy, upstream: Upstream) -> None:
    """`no-cache` fetches again and stores; `no-store` neither reads nor writes the cache."""
    await get(proxy)
    _, headers, _ = await get(proxy, headers={**ALICE, "Cache-Control": "no-cache"})
    assert headers["x-tollgate-cache"] == "miss"
    assert calls(upstream) == 2
    _, headers, _ = await get(proxy, headers={**ALICE, "Cache-Control": "no-store"})
    assert headers["x-tollgate-cache"] == "bypass"
    assert calls(upstream) == 3
    _, headers, _ = await get(proxy)
    assert headers["x-tollgate-cache"] == "hit"


async def test_a_bypassed_answer_is_not_stored(proxy: Proxy, upstream: Upstream) -> None:
    """After a `no-store` request on a cold cache, the next read is still a miss."""
    await get(proxy, "/v1/models/gpt-4o", {**ALICE, "Cache-Control": "no-store"})
    _, headers, _ = await get(proxy, "/v1/models/gpt-4o")
    assert headers["x-tollgate-cache"] == "miss"


async def test_deleting_a_model_drops_it_and_its_listing(
    make_proxy: MakeProxy, upstream: Upstream, store_settings: dict[str, Any]
) -> None:
    """A successful DELETE /v1/models/{model} invalidates that model and the scope's listing."""
    proxy = await make_proxy(**store_settings)
    model = "/v1/models/ft:gpt-4o:acme:x:1"
    await get(proxy)
    await get(proxy, model)
    async with aiohttp.ClientSession() as client:
        async with client.delete(proxy.url(model), headers=ALICE) as response:
            assert response.status == 200
    for path in ("/v1/models", model):
        _, headers, _ = await get(proxy, path)
        assert headers["x-tollgate-cache"] == "miss"


async def _flush(proxy: Proxy, body: dict[str, str]) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with aiohttp.ClientSession() as client:
        async with client.post(proxy.url("/admin/cache/flush"), json=body, headers=headers) as r:
            answer: dict[str, Any] = await r.json()
            return r.status, answer


async def test_the_admin_api_flushes_a_team_or_everything(
    make_proxy: MakeProxy, upstream: Upstream, store_settings: dict[str, Any]
) -> None:
    """Flushing team red drops alice's entries and keeps bob's; flushing all drops the rest."""
    upstream.state.knobs.expected_key = None
    proxy = await make_proxy(**store_settings)
    await get(proxy, headers=ALICE)
    await get(proxy, headers=BOB)
    status, answer = await _flush(proxy, {"team": "red"})
    assert (status, answer["flushed"]) == (200, 1)
    assert (await get(proxy, headers=ALICE))[1]["x-tollgate-cache"] == "miss"
    assert (await get(proxy, headers=BOB))[1]["x-tollgate-cache"] == "hit"
    status, answer = await _flush(proxy, {})
    assert answer["flushed"] == 2
    assert (await get(proxy, headers=BOB))[1]["x-tollgate-cache"] == "miss"
    assert (await _flush(proxy, {"team": "nope"}))[0] == 400


@pytest.mark.parametrize("status", [404, 429, 500, 502, 503])
async def test_error_answers_are_never_stored(
    proxy: Proxy, upstream: Upstream, status: int
) -> None:
    """Upstream errors are relayed and not cached: the next read goes upstream again."""
    upstream.state.knobs.status = status
    assert (await get(proxy))[0] == status
    assert (await get(proxy))[0] == status
    assert calls(upstream) == 2


def _marked_upstream(header: str, value: str) -> web.Application:
    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": []}, headers={header: value})

    app = web.Application()
    app.router.add_get("/v1/models", models)
    return app


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("Set-Cookie", "__cf_bm=x; path=/"),
        ("Cache-Control", "no-store"),
        ("Cache-Control", "private"),
    ],
)
async def test_answers_upstream_marks_private_are_never_stored(
    proxy_before: ProxyBefore, header: str, value: str
) -> None:
    """Set-Cookie, or Cache-Control no-store/private from upstream: relayed, never cached."""
    proxy = await proxy_before(_marked_upstream(header, value))
    await get(proxy)
    _, headers, _ = await get(proxy)
    assert headers["x-tollgate-cache"] == "miss"


async def test_a_dead_store_makes_the_cache_step_aside(
    make_proxy: MakeProxy, upstream: Upstream
) -> None:
    """With Redis unreachable, reads still succeed (straight upstream, without waiting on a
    lock nobody holds). Each failed store call counts (lookup, lock, store) until the circuit
    breaker opens after 5 in a row: from then on the store is not asked at all."""
    dead = RedisSettings(url=SecretStr(f"redis://127.0.0.1:{free_port()}/0"))
    proxy = await make_proxy(store="redis", redis=dead)
    results = [await get(proxy) for _ in range(6)]
    assert [status for status, _, _ in results] == [200] * 6
    assert calls(upstream) == 6
    assert proxy.server.app[CACHE].stats.store_errors == 5


async def test_a_hung_store_is_waited_on_a_few_times_then_left_alone_until_it_recovers(
    make_proxy: MakeProxy, upstream: Upstream, flush_redis: RedisServer
) -> None:
    """A Redis that stops answering (SIGSTOP: connections open, no replies) costs the timeout
    on 5 store calls, then none until the cool-down ends; after it, one probe finds Redis back
    and the cache answers from it again."""
    clock = FakeClock()
    redis = RedisSettings(url=SecretStr(flush_redis.url), timeout=0.05)
    proxy = await make_proxy(store="redis", redis=redis, clock=clock)
    assert (await get(proxy))[0] == 200  # a miss, stored
    flush_redis.process.send_signal(signal.SIGSTOP)
    try:
        results = [await get(proxy) for _ in range(8)]
    finally:
        flush_redis.process.send_signal(signal.SIGCONT)
    assert [status for status, _, _ in results] == [200] * 8
    assert calls(upstream) == 1 + 8
    assert proxy.server.app[CACHE].stats.store_errors == 5
    clock.advance(5.0 + 0.1)  # the breaker's cool-down (TOLLGATE_QUOTA__BREAKER_COOLDOWN)
    _, headers, _ = await get(proxy)
    assert headers["x-tollgate-cache"] == "hit"
    assert calls(upstream) == 1 + 8


async def test_operations_can_be_opted_in_by_config(
    make_proxy: MakeProxy, upstream: Upstream
) -> None:
    """With moderations opted in, an identical body is a hit and a different one a miss."""
    proxy = await make_proxy(cache=CacheSettings(operations={"moderations.create": 60}))
    states = []
    async with aiohttp.ClientSession() as client:
        for text in ("hello", "hello", "other"):
            url = proxy.url("/v1/moderations")
            async with client.post(url, json={"input": text}, headers=ALICE) as response:
                states.append(response.headers["x-tollgate-cache"])
    assert states == ["miss", "hit", "miss"]
    assert calls(upstream, "/v1/moderations") == 2


async def test_operations_that_are_not_cached_carry_no_cache_header(
    proxy: Proxy, upstream: Upstream
) -> None:
    """An image generation is never cached and says nothing about the cache."""
    async with aiohttp.ClientSession() as client:
        for _ in range(2):
            url = proxy.url("/v1/images/generations")
            async with client.post(url, json={"prompt": "otter"}, headers=ALICE) as response:
                assert "x-tollgate-cache" not in response.headers
    assert calls(upstream, "/v1/images/generations") == 2


async def test_the_memory_cache_stays_within_its_byte_budget() -> None:
    """Least recently used entries are evicted so the held bytes never exceed the budget."""
    cache = MemoryCache(max_bytes=1000)
    for index in range(20):
        await cache.put(f"k{index}", b"x" * 100, ttl=60)
        assert cache.size <= 1000
    assert await cache.get("k0") is None
    assert await cache.get("k19") == b"x" * 100
    await cache.get("k12")  # k11 .. k19 are held; reading k12 makes it the most recent
    await cache.put("k20", b"x" * 100, ttl=60)
    await cache.put("k21", b"x" * 100, ttl=60)
    assert await cache.get("k11") is None
    assert await cache.get("k12") is not None
    assert await cache.get("k13") is None
