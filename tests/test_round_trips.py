"""Store round trips per request, counted by a real redis-server through MONITOR.

Each test warms up with one request of its kind (connections opened, scripts cached, the
cache filled), then sends REQUESTS more one after the other between two markers, and
compares the commands Tollgate sent (not those its Lua scripts ran inside Redis) with what
the request should cost.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from proxy.policy import Policy
from proxy.settings import RedisSettings
from tests.conftest import (
    CLIENT_KEY,
    MakeProxy,
    Proxy,
    RedisServer,
    policy_for_tests,
    without_moderation,
)
from tests.test_keys import issue
from tests.test_quota import IMAGE, limited

REQUESTS = 5
MODERATION = ("POST", "/v1/moderations", {"input": "hi"})  # neither cached nor moderated
MODELS = ("GET", "/v1/models", None)  # cached
START, STOP = "tollgate-count-start", "tollgate-count-stop"


class CommandCounter:
    """The commands clients sent a redis-server between two ECHO markers, by name."""

    def __init__(self, server: RedisServer) -> None:
        self._client = aioredis.Redis(port=server.port, socket_timeout=30)
        self._seen: Counter[str] = Counter()
        self._watching: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Watch from now on (MONITOR is on once this returns)."""
        ready = asyncio.Event()
        self._watching = asyncio.create_task(self._watch(ready))
        await ready.wait()
        await self._client.echo(START)

    async def _watch(self, ready: asyncio.Event) -> None:
        async with self._client.monitor() as monitor:
            ready.set()
            counting = False
            while True:
                seen = await monitor.next_command()
                command = seen["command"]
                if STOP in command:
                    return
                if counting and seen["client_type"] != "lua":
                    self._seen[command.split(" ", 1)[0].lower()] += 1
                counting = counting or START in command

    async def stop(self) -> dict[str, int]:
        """Stop watching: what was sent meanwhile."""
        assert self._watching is not None
        await self._client.echo(STOP)
        async with asyncio.timeout(30):
            await self._watching
        return dict(self._seen)

    async def close(self) -> None:
        if self._watching is not None and not self._watching.done():
            self._watching.cancel()
        await self._client.aclose()


@pytest.fixture
async def commands(flush_redis: RedisServer) -> AsyncIterator[CommandCounter]:
    counter = CommandCounter(flush_redis)
    yield counter
    await counter.close()


async def on_redis(
    make_proxy: MakeProxy, server: RedisServer, policy: Policy | None = None
) -> Proxy:
    redis_settings = RedisSettings(url=SecretStr(server.url), timeout=1.0)
    policy = policy or without_moderation(policy_for_tests())
    return await make_proxy(policy=policy, store="redis", redis=redis_settings)


async def per_request(
    proxy: Proxy, commands: CommandCounter, key: str, call: tuple[str, str, Any]
) -> dict[str, float]:
    """Warm up, then REQUESTS requests in a row: Redis commands per request, by name."""
    method, path, body = call
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession() as client:
        for i in range(REQUESTS + 1):
            if i == 1:
                await commands.start()
            async with client.request(method, proxy.url(path), json=body, headers=headers) as r:
                assert r.status == 200, await r.text()
                await r.read()
    return {name: count / REQUESTS for name, count in (await commands.stop()).items()}


async def test_a_static_key_without_limits_costs_no_round_trip(
    make_proxy: MakeProxy, flush_redis: RedisServer, commands: CommandCounter
) -> None:
    """A key from the policy file, no limits, nothing cached: Redis is not asked at all."""
    proxy = await on_redis(make_proxy, flush_redis)
    assert await per_request(proxy, commands, CLIENT_KEY, MODERATION) == {}


async def test_an_issued_key_costs_one_get(
    make_proxy: MakeProxy, flush_redis: RedisServer, commands: CommandCounter
) -> None:
    """An issued key is one GET by its hash; nothing else when it has no limits."""
    proxy = await on_redis(make_proxy, flush_redis)
    key = (await issue(proxy, user="erin"))["key"]
    assert await per_request(proxy, commands, key, MODERATION) == {"get": 1}


async def test_a_limited_request_costs_one_evalsha(
    make_proxy: MakeProxy, flush_redis: RedisServer, commands: CommandCounter
) -> None:
    """Rate and spend limits of a user (and of the key): one EVALSHA charges them all."""
    policy = limited({"default": ["1000/day", "100000/month"], "keys": {"key_alice": ["99/day"]}})
    proxy = await on_redis(make_proxy, flush_redis, policy)
    assert await per_request(proxy, commands, CLIENT_KEY, MODERATION) == {"evalsha": 1}


async def test_an_issued_key_with_limits_costs_a_get_and_an_evalsha(
    make_proxy: MakeProxy, flush_redis: RedisServer, commands: CommandCounter
) -> None:
    """Auth's GET, then the quota's EVALSHA: two round trips, one each."""
    proxy = await on_redis(make_proxy, flush_redis, limited({"default": ["1000/day"]}))
    key = (await issue(proxy, user="erin"))["key"]
    assert await per_request(proxy, commands, key, MODERATION) == {"get": 1, "evalsha": 1}


async def test_a_team_limit_is_a_second_evalsha(
    make_proxy: MakeProxy, flush_redis: RedisServer, commands: CommandCounter
) -> None:
    """A team's counters have their own hash tag (their own Cluster slot): a user limit and a
    team limit are two EVALSHAs, the user's then the team's."""
    policy = limited({"default": ["1000/day"], "teams": {"red": ["5000/day"]}})
    proxy = await on_redis(make_proxy, flush_redis, policy)
    assert await per_request(proxy, commands, CLIENT_KEY, MODERATION) == {"evalsha": 2}


async def test_a_concurrency_limit_costs_a_charge_and_a_release(
    make_proxy: MakeProxy, flush_redis: RedisServer, commands: CommandCounter
) -> None:
    """A slot taken before the call must be given back after it: two EVALSHAs."""
    proxy = await on_redis(make_proxy, flush_redis, limited({"default": ["4 concurrent"]}))
    assert await per_request(proxy, commands, CLIENT_KEY, MODERATION) == {"evalsha": 2}


async def test_a_cache_hit_costs_one_get(
    make_proxy: MakeProxy, flush_redis: RedisServer, commands: CommandCounter
) -> None:
    """A model listing served from the cache: one GET, and upstream is not asked."""
    proxy = await on_redis(make_proxy, flush_redis)
    assert await per_request(proxy, commands, CLIENT_KEY, MODELS) == {"get": 1}


async def test_a_cache_hit_with_an_issued_key_costs_two_gets(
    make_proxy: MakeProxy, flush_redis: RedisServer, commands: CommandCounter
) -> None:
    """The key's GET and the entry's GET."""
    proxy = await on_redis(make_proxy, flush_redis)
    key = (await issue(proxy, user="erin"))["key"]
    assert await per_request(proxy, commands, key, MODELS) == {"get": 2}


async def test_a_moderated_image_request_with_a_known_verdict(
    make_proxy: MakeProxy, flush_redis: RedisServer, commands: CommandCounter
) -> None:
    """An image prompt checked before: the user's strikes (ZRANGEBYSCORE) and the cached
    verdict (GET), and no moderation call upstream."""
    proxy = await on_redis(make_proxy, flush_redis, policy_for_tests())
    call = ("POST", "/v1/images/generations", IMAGE)
    assert await per_request(proxy, commands, CLIENT_KEY, call) == {"zrangebyscore": 1, "get": 1}
