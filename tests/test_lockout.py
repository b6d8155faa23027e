"""Failed authentications per address: past the limit, the address gets 429, valid keys too."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import aiohttp
import openai
import pytest
from pydantic import SecretStr

from proxy.settings import AuthSettings, CacheSettings, RedisSettings
from tests.conftest import (
    ADMIN_TOKEN,
    CLIENT_KEY,
    FakeClock,
    MakeProxy,
    Proxy,
    RedisServer,
    free_port,
)
from tests.metrics_text import parse, scrape, value

WRONG = "tg-" + "w" * 43
THREE = AuthSettings(max_failures=3, failure_window=60)  # one more failure every 20 s


async def call(
    proxy: Proxy, key: str | None, *, via: str | None = None, path: str = "/v1/models"
) -> tuple[int, dict[str, str], dict[str, Any]]:
    """Status, headers and JSON answer for `key`, as if from `via` (X-Forwarded-For)."""
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    if via is not None:
        headers["X-Forwarded-For"] = via
    async with aiohttp.ClientSession() as client:
        async with client.get(proxy.url(path), headers=headers) as response:
            return response.status, dict(response.headers), await response.json()


async def statuses(proxy: Proxy, keys: Sequence[str | None], via: str | None = None) -> list[int]:
    """The status each key in turn gets."""
    return [(await call(proxy, key, via=via))[0] for key in keys]


async def metric(proxy: Proxy, name: str) -> float:
    """One unlabelled metric's value, from /metrics."""
    _, text = await scrape(proxy.url("/metrics"))
    found = value(parse(text), name)
    assert found is not None, name
    return found


async def test_too_many_failures_lock_the_address_out_even_for_a_valid_key(
    make_proxy: MakeProxy, store_settings: dict[str, Any]
) -> None:
    """Three failures are 401s; the fourth, and then a valid key, get OpenAI's 429 with
    Retry-After; once the window allows another failure, the valid key works again."""
    clock = FakeClock()
    proxy = await make_proxy(clock=clock, auth=THREE, **store_settings)
    assert await statuses(proxy, [WRONG, None, WRONG]) == [401, 401, 401]
    status, headers, body = await call(proxy, WRONG)
    assert (status, headers["Retry-After"], headers["retry-after-ms"]) == (429, "20", "20000")
    assert body["error"]["code"] == "rate_limit_exceeded"
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert "try again in 20s" in body["error"]["message"]
    assert await statuses(proxy, [CLIENT_KEY]) == [429]
    clock.advance(19.9)
    assert await statuses(proxy, [CLIENT_KEY]) == [429]
    clock.advance(0.1)
    assert await statuses(proxy, [CLIENT_KEY, WRONG, WRONG, CLIENT_KEY]) == [200, 401, 429, 429]


async def test_lockouts_are_counted_and_logged(make_proxy: MakeProxy) -> None:
    """The metrics count failures and lock-outs; the log line says which, and the address."""
    proxy = await make_proxy(auth=AuthSettings(max_failures=1))
    assert await statuses(proxy, [WRONG, WRONG, CLIENT_KEY]) == [401, 429, 429]
    assert await metric(proxy, "tollgate_auth_failures_total") == 2
    assert await metric(proxy, "tollgate_auth_lockouts_total") == 2
    lines = [json.loads(line) for line in proxy.log_lines() if '"/v1/models"' in line]
    assert [(line["status"], line["auth"], line["client"]) for line in lines] == [
        (401, "failed", "127.0.0.1"),
        (429, "locked_out", "127.0.0.1"),
        (429, "locked_out", "127.0.0.1"),
    ]


async def test_one_address_locked_out_leaves_others_alone(make_proxy: MakeProxy) -> None:
    """Behind a trusted proxy, each forwarded address has its own count; an IPv6 host counts
    by its /64."""
    proxy = await make_proxy(auth=AuthSettings(max_failures=2), trusted_proxies=["127.0.0.1"])
    assert await statuses(proxy, [WRONG, WRONG, WRONG], via="203.0.113.7") == [401, 401, 429]
    assert await statuses(proxy, [CLIENT_KEY], via="203.0.113.7") == [429]
    assert await statuses(proxy, [CLIENT_KEY, WRONG], via="203.0.113.8") == [200, 401]
    assert await statuses(proxy, [CLIENT_KEY, WRONG]) == [200, 401]
    assert await statuses(proxy, [WRONG], via="2001:db8::1") == [401]
    assert await statuses(proxy, [WRONG, WRONG, CLIENT_KEY], via="2001:db8::2") == [401, 429, 429]
    assert await statuses(proxy, [CLIENT_KEY], via="2001:db8:0:1::1") == [200]


async def test_forwarded_addresses_count_for_nothing_unless_the_sender_is_trusted(
    make_proxy: MakeProxy,
) -> None:
    """Without trusted proxies a client cannot dodge the count by writing X-Forwarded-For."""
    proxy = await make_proxy(auth=AuthSettings(max_failures=2))
    assert await statuses(proxy, [WRONG], via="203.0.113.1") == [401]
    assert await statuses(proxy, [WRONG], via="203.0.113.2") == [401]
    assert await statuses(proxy, [WRONG, CLIENT_KEY], via="203.0.113.3") == [429, 429]


async def test_replicas_on_redis_count_failures_together(
    make_proxy: MakeProxy, flush_redis: RedisServer
) -> None:
    """Failures on two replicas add up; each refuses every request from the address once it
    has met the lock-out at a failure of its own."""
    store: dict[str, Any] = {
        "store": "redis",
        "redis": RedisSettings(url=SecretStr(flush_redis.url), timeout=1.0),
        "auth": THREE,
    }
    clock = FakeClock()
    one, two = await make_proxy(clock=clock, **store), await make_proxy(clock=clock, **store)
    assert await statuses(one, [WRONG, WRONG]) == [401, 401]
    assert await statuses(two, [WRONG, WRONG, CLIENT_KEY]) == [401, 429, 429]
    assert await statuses(one, [CLIENT_KEY, WRONG, CLIENT_KEY]) == [200, 429, 429]


async def test_wrong_admin_tokens_count_too(make_proxy: MakeProxy) -> None:
    """Guessing the admin token is failing to authenticate: it locks the address out of /v1."""
    proxy = await make_proxy(auth=AuthSettings(max_failures=2))
    wrong = [await call(proxy, "not-the-token", path="/admin/keys") for _ in range(3)]
    assert [status for status, _, _ in wrong] == [401, 401, 429]
    assert (await call(proxy, ADMIN_TOKEN, path="/admin/keys"))[0] == 429
    assert await statuses(proxy, [CLIENT_KEY]) == [429]


async def test_the_limit_can_be_turned_off(make_proxy: MakeProxy) -> None:
    """`max_failures: 0`: every failure is a 401, and is still counted in the metrics."""
    proxy = await make_proxy(auth=AuthSettings(max_failures=0))
    assert await statuses(proxy, [WRONG] * 25 + [CLIENT_KEY]) == [401] * 25 + [200]
    assert await metric(proxy, "tollgate_auth_failures_total") == 25


@pytest.mark.parametrize("key", [None, WRONG])
async def test_a_store_that_cannot_count_leaves_failures_uncounted(
    make_proxy: MakeProxy, key: str | None
) -> None:
    """With the store down a missing key is still a 401 (never a 500), counted as a store
    error; issued keys get the store's 503 as before."""
    dead = RedisSettings(url=SecretStr(f"redis://127.0.0.1:{free_port()}/0"))
    proxy = await make_proxy(
        store="redis",
        redis=dead,
        auth=AuthSettings(max_failures=1),
        cache=CacheSettings(enabled=False),  # the cache's own dead-store wait is tested apart
    )
    expected = 401 if key is None else 503
    assert await statuses(proxy, [key, key, key, CLIENT_KEY]) == [expected] * 3 + [200]
    if key is None:
        assert await metric(proxy, "tollgate_auth_failure_store_errors_total") == 3


async def test_the_sdk_raises_its_rate_limit_error_for_a_locked_out_address(
    make_proxy: MakeProxy,
) -> None:
    """The official SDK reads the lock-out as OpenAI's own 429: a RateLimitError."""
    proxy = await make_proxy(auth=AuthSettings(max_failures=1))
    url = proxy.url("/v1")
    async with openai.AsyncOpenAI(base_url=url, api_key=WRONG, max_retries=0) as wrong:
        with pytest.raises(openai.AuthenticationError):
            await wrong.models.list()
        with pytest.raises(openai.RateLimitError) as caught:
            await wrong.models.list()
    assert caught.value.code == "rate_limit_exceeded"
    assert caught.value.response.headers["retry-after"] == "60"
    async with openai.AsyncOpenAI(base_url=url, api_key=CLIENT_KEY, max_retries=0) as right:
        with pytest.raises(openai.RateLimitError):
            await right.models.list()
